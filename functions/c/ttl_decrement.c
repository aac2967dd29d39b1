/*
 * ttl_decrement: the forwarding step of an IPv4 router, as a shardgate
 * function (built by scripts/build-functions.sh into functions/ttl_decrement.wasm).
 *
 * Input: an IPv4 packet. Output: the packet with its TTL decremented and the
 * header checksum patched incrementally (RFC 1624: HC' = ~(~HC + ~m + m')).
 * Empty output means "drop": not IPv4, header too short, or TTL expired
 * (TTL <= 1; a router would send ICMP Time Exceeded).
 *
 * ABI: alloc(len) -> ptr, handle(ptr, len) -> (out_ptr << 32) | out_len.
 * No libc, no imports: every instance serves exactly one request.
 */

#define CAPACITY 65536

static unsigned char packet[CAPACITY];

__attribute__((export_name("alloc"))) unsigned char *alloc(int len)
{
    if (len < 0 || len > CAPACITY)
        __builtin_trap();
    return packet;
}

static long long output(const unsigned char *p, unsigned len)
{
    return ((long long)(unsigned long)p << 32) | len;
}

__attribute__((export_name("handle"))) long long handle(unsigned char *p, int len)
{
    if (len < 20 || (p[0] >> 4) != 4)
        return output(p, 0);
    unsigned ihl = (p[0] & 15u) * 4u;
    if (ihl < 20 || ihl > (unsigned)len)
        return output(p, 0);
    if (p[8] <= 1)
        return output(p, 0);

    unsigned old_word = ((unsigned)p[8] << 8) | p[9];
    p[8] -= 1;
    unsigned new_word = ((unsigned)p[8] << 8) | p[9];
    unsigned hc = ((unsigned)p[10] << 8) | p[11];
    unsigned sum = (~hc & 0xffffu) + (~old_word & 0xffffu) + new_word;
    sum = (sum & 0xffffu) + (sum >> 16);
    sum = (sum & 0xffffu) + (sum >> 16);
    hc = ~sum & 0xffffu;
    p[10] = (unsigned char)(hc >> 8);
    p[11] = (unsigned char)hc;
    return output(p, (unsigned)len);
}
