;; checksum: the Internet checksum (RFC 1071) of the input.
;;
;; Input: any bytes (e.g. an IPv4/TCP/UDP header with its checksum field
;; zeroed). Output: the 16-bit ones'-complement checksum, 2 bytes big-endian
;; (an input that already carries a correct checksum yields 00 00).
;;
;; The sum is taken over little-endian 32-bit loads into a 64-bit
;; accumulator and byte-swapped at the end: the ones'-complement sum is
;; byte-order independent (RFC 1071 section 2(B)).
(module
  (memory (export "memory") 1)
  ;; One instance serves one request: the input always goes to 1024,
  ;; memory grows to fit it.
  (func (export "alloc") (param $len i32) (result i32)
    (local $end i32)
    (local.set $end (i32.add (i32.const 1024) (local.get $len)))
    (if (i32.lt_u (local.get $end) (i32.const 1024)) (then unreachable))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.lt_s
              (memory.grow
                (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
                         (memory.size)))
              (i32.const 0))
          (then unreachable))))
    (i32.const 1024))

  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $end4 i32) (local $end i32) (local $s i64) (local $c i32)
    (local.set $i (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $end4 (i32.add (local.get $ptr) (i32.and (local.get $len) (i32.const -4))))
    (block $done
      (loop $words
        (br_if $done (i32.ge_u (local.get $i) (local.get $end4)))
        (local.set $s (i64.add (local.get $s) (i64.load32_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $words)))
    ;; A trailing 16-bit word, then a trailing byte (the high byte of a
    ;; zero-padded big-endian word is the low byte in little-endian order).
    (if (i32.ge_u (i32.sub (local.get $end) (local.get $i)) (i32.const 2))
      (then
        (local.set $s (i64.add (local.get $s) (i64.load16_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))))
    (if (i32.lt_u (local.get $i) (local.get $end))
      (then (local.set $s (i64.add (local.get $s) (i64.load8_u (local.get $i))))))
    ;; Fold 64 -> 16 bits with end-around carries.
    (local.set $s (i64.add (i64.and (local.get $s) (i64.const 0xffffffff)) (i64.shr_u (local.get $s) (i64.const 32))))
    (local.set $s (i64.add (i64.and (local.get $s) (i64.const 0xffffffff)) (i64.shr_u (local.get $s) (i64.const 32))))
    (local.set $s (i64.add (i64.and (local.get $s) (i64.const 0xffff)) (i64.shr_u (local.get $s) (i64.const 16))))
    (local.set $s (i64.add (i64.and (local.get $s) (i64.const 0xffff)) (i64.shr_u (local.get $s) (i64.const 16))))
    (local.set $s (i64.add (i64.and (local.get $s) (i64.const 0xffff)) (i64.shr_u (local.get $s) (i64.const 16))))
    (local.set $c (i32.xor (i32.wrap_i64 (local.get $s)) (i32.const 0xffff)))
    ;; Output at offset 0: the little-endian sum's low byte is the
    ;; big-endian checksum's high byte.
    (i32.store8 (i32.const 0) (local.get $c))
    (i32.store8 (i32.const 1) (i32.shr_u (local.get $c) (i32.const 8)))
    (i64.const 2)))
