#!/usr/bin/env bash
# Print what this host has against deploy/tuning.md: NIC queues and IRQ
# affinity, irqbalance, isolcpus/nohz_full, socket buffer sysctls, memlock,
# CPU governor. Reads only; changes nothing. Exit 0 always (a report, not a gate).
#
#   scripts/check-host.sh [CONFIG]
#
# CONFIG (default /etc/shardgate/shardgate.toml, if present): its
# udp_rcvbuf / udp_sndbuf settings are checked against net.core.rmem_max /
# wmem_max (shardgate refuses to start when the kernel would cap them).
set -u
config=${1:-/etc/shardgate/shardgate.toml}

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
# The largest value of `key = N` in the config (0 when unset).
largest_setting() { # key
    awk -v k="$1" -F= '$1 ~ "^[ \t]*"k"[ \t]*$" { v = $2 + 0; if (v > m) m = v } END { print m + 0 }' "$config"
}
if [ -r "$config" ]; then
    for pair in udp_rcvbuf:rmem_max udp_sndbuf:wmem_max; do
        key=${pair%%:*} limit=${pair##*:}
        want=$(largest_setting "$key")
        have=$(sysctl -n "net.core.$limit" 2>/dev/null || echo 0)
        if [ "$want" -eq 0 ] && [ "$key" = udp_rcvbuf ]; then
            # Unset: shardgate asks for 1 MiB, silently capped at rmem_max.
            if [ "$have" -ge 1048576 ]; then
                ok "$config: no $key set: each socket gets 1 MiB (net.core.$limit = $have)"
            else
                warn "$config: no $key set: each socket asks for 1 MiB but net.core.$limit = $have caps it; sysctl -w net.core.$limit=8388608"
            fi
        elif [ "$want" -eq 0 ]; then
            info "$config: no $key set (each socket gets the kernel default, net.core.${limit/max/default})"
        elif [ "$have" -ge "$want" ]; then
            ok "$config: $key = $want fits net.core.$limit = $have"
        else
            warn "$config: $key = $want is above net.core.$limit = $have: shardgate will refuse to start; sysctl -w net.core.$limit=$want"
        fi
    done
else
    info "no config at $config: pass one to check its udp_rcvbuf / udp_sndbuf"
fi
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
