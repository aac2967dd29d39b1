;; classify: name the traffic class of an IP packet.
;;
;; Input: an IPv4 or IPv6 packet starting at the IP header. Output: an ASCII
;; label `<ip>/<transport>/<service>`, e.g. `ipv4/udp/dns`, `ipv6/tcp/https`,
;; `ipv4/icmp/-`, `ipv4/tcp/other`, or `invalid` when the input is not a
;; well-formed IPv4/IPv6 header. Services by destination port: 53 dns,
;; 80 http, 443 https (TCP) / quic (UDP), 123 ntp, 22 ssh, 25 smtp.
;; IPv6 extension headers are not walked (classified `ipv6/other/-`).
(module
  (memory (export "memory") 1)
  ;; Labels (offset, length).
  (data (i32.const 64) "invalid")    ;; 64, 7
  (data (i32.const 72) "ipv4/")      ;; 72, 5
  (data (i32.const 80) "ipv6/")      ;; 80, 5
  (data (i32.const 88) "tcp/")       ;; 88, 4
  (data (i32.const 96) "udp/")       ;; 96, 4
  (data (i32.const 104) "icmp/-")    ;; 104, 6
  (data (i32.const 112) "other/-")   ;; 112, 7
  (data (i32.const 120) "dns")       ;; 120, 3
  (data (i32.const 124) "http")      ;; 124, 4
  (data (i32.const 128) "https")     ;; 128, 5
  (data (i32.const 136) "quic")      ;; 136, 4
  (data (i32.const 140) "ntp")       ;; 140, 3
  (data (i32.const 144) "ssh")       ;; 144, 3
  (data (i32.const 148) "smtp")      ;; 148, 4
  (data (i32.const 152) "other")     ;; 152, 5

  ;; Output is assembled at 256.. ; $out is the write position.
  (global $out (mut i32) (i32.const 256))
  (global $heap (mut i32) (i32.const 1024))

  (func (export "alloc") (param $len i32) (result i32)
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

  (func $emit (param $src i32) (param $len i32)
    (memory.copy (global.get $out) (local.get $src) (local.get $len))
    (global.set $out (i32.add (global.get $out) (local.get $len))))

  (func $u16be (param $p i32) (result i32)
    (i32.or (i32.shl (i32.load8_u (local.get $p)) (i32.const 8))
            (i32.load8_u offset=1 (local.get $p))))

  ;; Emit the service label for destination port $port; $udp selects quic.
  (func $service (param $port i32) (param $udp i32)
    (block $done
      (if (i32.eq (local.get $port) (i32.const 53)) (then (call $emit (i32.const 120) (i32.const 3)) (br $done)))
      (if (i32.eq (local.get $port) (i32.const 80)) (then (call $emit (i32.const 124) (i32.const 4)) (br $done)))
      (if (i32.eq (local.get $port) (i32.const 443))
        (then
          (if (local.get $udp)
            (then (call $emit (i32.const 136) (i32.const 4)))
            (else (call $emit (i32.const 128) (i32.const 5))))
          (br $done)))
      (if (i32.eq (local.get $port) (i32.const 123)) (then (call $emit (i32.const 140) (i32.const 3)) (br $done)))
      (if (i32.eq (local.get $port) (i32.const 22)) (then (call $emit (i32.const 144) (i32.const 3)) (br $done)))
      (if (i32.eq (local.get $port) (i32.const 25)) (then (call $emit (i32.const 148) (i32.const 4)) (br $done)))
      (call $emit (i32.const 152) (i32.const 5))))

  ;; Emit `<transport>/<service>` for protocol $proto with the L4 header at
  ;; $l4 (or `invalid` if the packet is too short for the ports).
  (func $transport (param $proto i32) (param $l4 i32) (param $end i32) (result i32)
    (if (i32.or (i32.eq (local.get $proto) (i32.const 1)) (i32.eq (local.get $proto) (i32.const 58)))
      (then (call $emit (i32.const 104) (i32.const 6)) (return (i32.const 1))))
    (if (i32.or (i32.eq (local.get $proto) (i32.const 6)) (i32.eq (local.get $proto) (i32.const 17)))
      (then
        (if (i32.gt_u (i32.add (local.get $l4) (i32.const 4)) (local.get $end))
          (then (return (i32.const 0))))
        (if (i32.eq (local.get $proto) (i32.const 6))
          (then (call $emit (i32.const 88) (i32.const 4)))
          (else (call $emit (i32.const 96) (i32.const 4))))
        (call $service
          (call $u16be (i32.add (local.get $l4) (i32.const 2)))
          (i32.eq (local.get $proto) (i32.const 17)))
        (return (i32.const 1))))
    (call $emit (i32.const 112) (i32.const 7))
    (i32.const 1))

  ;; Success branches to $valid, anything else to $invalid.
  (func (export "handle") (param $ptr i32) (param $len i32) (result i64)
    (local $v i32) (local $ihl i32) (local $end i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $invalid
      (block $valid
        (br_if $invalid (i32.lt_u (local.get $len) (i32.const 20)))
        (local.set $v (i32.shr_u (i32.load8_u (local.get $ptr)) (i32.const 4)))
        (if (i32.eq (local.get $v) (i32.const 4))
          (then
            (local.set $ihl (i32.shl (i32.and (i32.load8_u (local.get $ptr)) (i32.const 15)) (i32.const 2)))
            (br_if $invalid (i32.lt_u (local.get $ihl) (i32.const 20)))
            (br_if $invalid (i32.gt_u (local.get $ihl) (local.get $len)))
            (call $emit (i32.const 72) (i32.const 5))
            (br_if $valid
              (call $transport
                (i32.load8_u offset=9 (local.get $ptr))
                (i32.add (local.get $ptr) (local.get $ihl))
                (local.get $end)))
            (br $invalid)))
        (if (i32.eq (local.get $v) (i32.const 6))
          (then
            (br_if $invalid (i32.lt_u (local.get $len) (i32.const 40)))
            (call $emit (i32.const 80) (i32.const 5))
            (br_if $valid
              (call $transport
                (i32.load8_u offset=6 (local.get $ptr))
                (i32.add (local.get $ptr) (i32.const 40))
                (local.get $end)))
            (br $invalid)))
        (br $invalid))
      ;; valid: the label assembled at 256..$out
      (return (i64.or (i64.shl (i64.const 256) (i64.const 32))
                      (i64.extend_i32_u (i32.sub (global.get $out) (i32.const 256))))))
    ;; invalid
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 7))))
