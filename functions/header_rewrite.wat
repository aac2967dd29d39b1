;; header_rewrite: normalize an HTTP/1.x request head on its way to a
;; backend.
;;
;; Input: an HTTP/1.x request (head, optionally followed by the body).
;; Output: the same request with
;;   - `Via: 1.1 shardgate` inserted right after the request line, and
;;   - every header field name lower-cased (as HTTP/2 and HTTP/3 require),
;; field values, the blank line and the body copied unchanged. Input without
;; a line break is returned unchanged.
(module
  (memory (export "memory") 1)
  (data (i32.const 64) "Via: 1.1 shardgate\0d\0a")   ;; 64, 20
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then unreachable))
    (local.set $end (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.lt_s
              (memory.grow
                (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
                         (memory.size)))
              (i32.const 0))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $end i32) (local $out i32) (local $o i32)
    (local $b i32) (local $line_start i32) (local $in_name i32)
    (local.set $i (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $out (call $alloc (i32.add (local.get $len) (i32.const 20))))
    (local.set $o (local.get $out))
    ;; The request line, through its '\n'.
    (block $line_done
      (loop $line
        (if (i32.ge_u (local.get $i) (local.get $end))
          (then
            ;; No line break at all: unchanged.
            (return (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                            (i64.extend_i32_u (local.get $len))))))
        (local.set $b (i32.load8_u (local.get $i)))
        (i32.store8 (local.get $o) (local.get $b))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (br_if $line_done (i32.eq (local.get $b) (i32.const 10)))
        (br $line)))
    (memory.copy (local.get $o) (i32.const 64) (i32.const 20))
    (local.set $o (i32.add (local.get $o) (i32.const 20)))
    ;; Header lines until the blank line; then the rest verbatim.
    (local.set $line_start (i32.const 1))
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $b (i32.load8_u (local.get $i)))
        (if (local.get $line_start)
          (then
            (if (i32.or (i32.eq (local.get $b) (i32.const 13)) (i32.eq (local.get $b) (i32.const 10)))
              (then
                (memory.copy (local.get $o) (local.get $i) (i32.sub (local.get $end) (local.get $i)))
                (local.set $o (i32.add (local.get $o) (i32.sub (local.get $end) (local.get $i))))
                (br $done)))
            (local.set $line_start (i32.const 0))
            (local.set $in_name (i32.const 1))))
        (if (local.get $in_name)
          (then
            (if (i32.eq (local.get $b) (i32.const 58))
              (then (local.set $in_name (i32.const 0)))
              (else
                (if (i32.lt_u (i32.sub (local.get $b) (i32.const 65)) (i32.const 26))
                  (then (local.set $b (i32.add (local.get $b) (i32.const 32)))))))))
        (i32.store8 (local.get $o) (local.get $b))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (if (i32.eq (local.get $b) (i32.const 10))
          (then
            (local.set $line_start (i32.const 1))
            (local.set $in_name (i32.const 0))))
        (br $byte)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $o) (local.get $out))))))
