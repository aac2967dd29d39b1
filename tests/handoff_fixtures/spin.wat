;; spin: echo the input, after burning CPU when asked to.
;;
;; Input starting with `spin` and a 4-byte little-endian count N: loop N
;; times (a CPU-bound delay; ~1 ns per round here), then echo the whole
;; input. Any other input is echoed at once. Used by tests/handoff_e2e.rs
;; (a deliberately slow function) and scripts/bench-handoff.sh (a ~50 µs
;; function).
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.lt_s
              (memory.grow
                (i32.add
                  (i32.shr_u
                    (i32.sub (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
                    (i32.const 16))
                  (i32.const 1)))
              (i32.const 0))
          (then unreachable))))
    (local.get $ptr))

  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $acc i32)
    ;; "spin" = 0x6e697073 little-endian
    (if (i32.ge_u (local.get $len) (i32.const 8))
      (then
        (if (i32.eq (i32.load (local.get $ptr)) (i32.const 0x6e697073))
          (then (local.set $n (i32.load offset=4 (local.get $ptr)))))))
    (block $done
      (loop $spin
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc
          (i32.add (i32.mul (local.get $acc) (i32.const 31)) (local.get $n)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $spin)))
    (i32.store (i32.const 0) (local.get $acc))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len)))))
