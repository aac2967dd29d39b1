;; probe: the isolation and failure-mode test function.
;;
;; Every call first records what it finds, then leaves traces behind:
;; output (16 bytes, little-endian u32s, at offset 32):
;;   [0] the non-exported mutable global $calls   (pristine: 0)
;;   [1] the memory cell at offset 16             (pristine: "SGV0" = 0x30564753)
;;   [2] memory size in pages                     (pristine: 1)
;;   [3] the data-segment byte at offset 20        (pristine: 7)
;; then bumps $calls, overwrites the cell, grows memory by one page and
;; writes a marker, and acts on the first input byte:
;;   'o' ok (return the report)      't' trap (unreachable)
;;   'l' loop forever (deadline)     'g' grow memory by 1 GiB (memory limit)
;;   'p' return an out-of-bounds output pointer
;;   'b' return a 2 GiB output length
;;   'e' echo the input (after the 16-byte report)
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "SGV0")
  (data (i32.const 20) "\07")
  (global $calls (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 1024))

  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.lt_s (memory.grow (i32.const 1)) (i32.const 0)) (then unreachable))))
    (local.get $ptr))

  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $cmd i32)
    (i32.store (i32.const 32) (global.get $calls))
    (i32.store (i32.const 36) (i32.load (i32.const 16)))
    (i32.store (i32.const 40) (memory.size))
    (i32.store (i32.const 44) (i32.load8_u (i32.const 20)))
    ;; Leave traces.
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store (i32.const 16) (i32.const 0xdeadbeef))
    (i32.store8 (i32.const 20) (i32.const 0xff))
    (drop (memory.grow (i32.const 1)))
    (i32.store (i32.const 65540) (i32.const 0x11111111))

    (if (i32.eqz (local.get $len)) (then (return (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 16)))))
    (local.set $cmd (i32.load8_u (local.get $ptr)))
    (if (i32.eq (local.get $cmd) (i32.const 116)) ;; 't'
      (then unreachable))
    (if (i32.eq (local.get $cmd) (i32.const 108)) ;; 'l'
      (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $cmd) (i32.const 103)) ;; 'g'
      (then (drop (memory.grow (i32.const 16384)))))
    (if (i32.eq (local.get $cmd) (i32.const 112)) ;; 'p'
      (then (return (i64.or (i64.shl (i64.const 0x7ffffff0) (i64.const 32)) (i64.const 16)))))
    (if (i32.eq (local.get $cmd) (i32.const 98)) ;; 'b'
      (then (return (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 0x80000000)))))
    (if (i32.eq (local.get $cmd) (i32.const 101)) ;; 'e'
      (then
        (memory.copy (i32.const 48) (local.get $ptr) (local.get $len))
        (return (i64.or (i64.shl (i64.const 32) (i64.const 32))
                        (i64.extend_i32_u (i32.add (local.get $len) (i32.const 16)))))))
    (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 16))))
