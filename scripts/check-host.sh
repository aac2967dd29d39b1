#!/usr/bin/env bash
# Print what this host has against deploy/tuning.md: NIC queues and IRQ
# affinity, irqbalance, isolcpus/nohz_full, socket buffer sysctls, memlock,
# CPU governor. Reads only; changes nothing. Exit 0 always (a report, not a gate).
set -u

ok()   { printf '  [ok]   %s\n' "$*"; }
warn() { printf '  [warn] %s\n' "$*"; }
info() { printf '  [info] %s\n' "$*"; }
sysctl_at_least() { # name minimum
    local v; v=$(sysctl -n "$1" 2>/dev/null) || { warn "$1: unreadable"; return; }
    if [ "$v" -ge "$2" ] 2>/dev/null; then ok "$1 = $v (>= $2)"; else warn "$1 = $v (suggest >= $2)"; fi
}

echo "CPUs"
info "online: $(cat /sys/devices/system/cpu/online 2>/dev/null)  ($(nproc) usable by this shell)"
iso=$(cat /sys/devices/system/cpu/isolated 2>/dev/null); nohz=$(cat /sys/devices/system/cpu/nohz_full 2>/dev/null)
[ -n "$iso" ] && ok "isolated: $iso" || info "isolcpus: none (see tuning.md §2)"
[ -n "$nohz" ] && [ "$nohz" != "(null)" ] && ok "nohz_full: $nohz" || info "nohz_full: none"
gov=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "n/a")
[ "$gov" = performance ] && ok "governor: $gov" || info "governor: $gov (performance suggested on shard cores)"

echo "NIC queues and IRQs"
if systemctl is-active --quiet irqbalance 2>/dev/null || pgrep -x irqbalance >/dev/null; then
    warn "irqbalance is running: it moves NIC IRQs off their shard cores"
else
    ok "irqbalance not running"
fi
for dev in /sys/class/net/*; do
    name=$(basename "$dev")
    [ "$name" = lo ] && continue
    [ -d "$dev/device" ] || continue
    rxq=$(ls -d "$dev"/queues/rx-* 2>/dev/null | wc -l)
    info "$name: $rxq rx queue(s)"
    if command -v ethtool >/dev/null; then
        ethtool -l "$name" 2>/dev/null | awk '/Combined/ {printf "  [info] %s combined channels: %s\n", "'"$name"'", $2}'
    fi
    grep -E "$name" /proc/interrupts 2>/dev/null | while read -r irq _; do
        irq=${irq%:}
        info "$name IRQ $irq -> CPUs $(cat /proc/irq/"$irq"/smp_affinity_list 2>/dev/null)"
    done
done

echo "Socket buffers"
sysctl_at_least net.core.rmem_max 8388608
sysctl_at_least net.core.wmem_max 8388608
sysctl_at_least net.core.rmem_default 1048576
sysctl_at_least net.core.netdev_max_backlog 5000
sysctl_at_least net.core.somaxconn 4096
if command -v nstat >/dev/null; then
    info "$(nstat -az UdpRcvbufErrors 2>/dev/null | awk '/UdpRcvbufErrors/ {print "UdpRcvbufErrors since boot: " $2}')"
fi

echo "Locked memory (io_uring)"
ml=$(ulimit -l)
if [ "$ml" = unlimited ] || [ "$ml" -ge 65536 ] 2>/dev/null; then ok "memlock (this shell): $ml KiB"
else warn "memlock (this shell): $ml KiB; the systemd unit sets LimitMEMLOCK=64M; by hand: ulimit -l 65536"; fi
if pid=$(pidof shardgate 2>/dev/null); then
    for p in $pid; do info "shardgate pid $p: $(grep 'locked memory' /proc/"$p"/limits | tr -s ' ')"; done
fi

echo "io_uring"
if [ -r /proc/sys/kernel/io_uring_disabled ]; then
    v=$(cat /proc/sys/kernel/io_uring_disabled)
    [ "$v" = 0 ] && ok "kernel.io_uring_disabled = 0" || warn "kernel.io_uring_disabled = $v: shardgate needs io_uring (set 0)"
else
    info "kernel.io_uring_disabled not present (kernel $(uname -r))"
fi
exit 0
