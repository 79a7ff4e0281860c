// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
//
// Turnpike's in-kernel ChannelData fast path: a tc (clsact/tcx) ingress program.
//
// A relay that reads every datagram into user space pays two trips through the socket
// layer per packet (receive, then send); measured here, the send alone costs ~2.7 us of
// a ~4 us budget (benches/send_floor.rs). For the one shape that dominates a call's
// traffic -- UDP ChannelData between a client and a channel-bound peer -- nothing in
// the forwarding needs user space: strip or add the 4-byte header, swap the addresses,
// hand the packet on. This program does exactly that for flows user space has
// installed in two maps, and passes everything else up unchanged, so user space stays
// the authority: requests, Send/Data indications, expiry, padding, fragments, IPv6 and
// anything unusual take the socket path, exactly as without this program.
//
//   client --ChannelData--> listener   =>  relay addr --payload--> peer   (C2P map)
//   peer   --payload-->     relay addr =>  listener --ChannelData--> client (P2C map)
//
// Every entry carries an expiry (CLOCK_MONOTONIC ns): the earliest of the allocation's,
// the channel's and the permission's. Past it the packet goes to user space, which
// drops it and counts why, exactly as without the fast path.
//
// Hand-written rather than generated: it is the hot path, and it is small.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Keys and values are shared with src/fastpath/maps.rs: addresses and ports in network
// byte order (as on the wire), channel numbers in host order, no implicit padding.
struct c2p_key {
    __u32 client_ip;
    __u32 server_ip;
    __u16 client_port;
    __u16 server_port;
    __u16 channel;
    __u16 pad;
};

// `flags` of a value. DEST_LOCAL: the destination (peer or client) is an address of
// this host. SRC_LOCAL: the source is, so its packets can only come in on loopback;
// one that arrives from outside with that source is spoofed (the stack would drop it
// as a martian, which it has not checked yet at tc ingress) and is left to the stack.
#define DEST_LOCAL 1
#define SRC_LOCAL 2

struct c2p_val {
    __u64 expires_ns;
    __u32 relay_ip;
    __u32 peer_ip;
    __u16 relay_port;
    __u16 peer_port;
    __u32 flags;
};

struct p2c_key {
    __u32 peer_ip;
    __u32 relay_ip;
    __u16 peer_port;
    __u16 relay_port;
};

struct p2c_val {
    __u64 expires_ns;
    __u32 client_ip;
    __u32 server_ip;
    __u16 client_port;
    __u16 server_port;
    __u16 channel;
    __u16 flags;
};

// Counter slots in STATS (per CPU; user space sums them).
enum {
    STAT_C2P_PACKETS,
    STAT_C2P_BYTES,
    STAT_P2C_PACKETS,
    STAT_P2C_BYTES,
    STAT_EXPIRED,
    STAT_SLOTS,
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    // Not preallocated: a deleted or replaced entry is freed only after every program
    // still reading it has finished (RCU), never reused under a reader's feet.
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 262144);
    __type(key, struct c2p_key);
    __type(value, struct c2p_val);
} C2P SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    // Not preallocated: a deleted or replaced entry is freed only after every program
    // still reading it has finished (RCU), never reused under a reader's feet.
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 262144);
    __type(key, struct p2c_key);
    __type(value, struct p2c_val);
} P2C SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STAT_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} STATS SEC(".maps");

#define ETH_OFF 0
#define IP_OFF (ETH_OFF + sizeof(struct ethhdr))
#define UDP_OFF (IP_OFF + sizeof(struct iphdr))
#define LOOPBACK_IFINDEX 1

static __always_inline void count(__u32 slot, __u64 n)
{
    __u64 *v = bpf_map_lookup_elem(&STATS, &slot);
    if (v)
        *v += n;
}

// The IPv4 header checksum over a 20-byte header whose check field is zero.
static __always_inline __u16 ip_checksum(struct iphdr *ip)
{
    __u32 sum = 0;
    __u16 *w = (__u16 *)ip;
#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += w[i];
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

// How the rewritten packet leaves this program.
enum {
    UP_HERE,        // up this host's stack, from loopback where it came in
    TO_LOOPBACK,    // to a local socket, re-entering through loopback
    OUT_DEVICE,     // out of the device `fib` names, with its Ethernet addresses
};

// Where the rewritten packet goes, or -1 to leave it to user space.
//
// A destination on this host (user space says which: DEST_LOCAL) is reached through
// loopback, the only device on which the stack accepts a packet whose source is one
// of its own addresses (elsewhere that is a martian). Anything else needs the kernel's
// route and neighbour: bpf_fib_lookup answers only where forwarding is enabled on the
// device, so without it such packets go up and take the socket path.
static __always_inline int route(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
                                 __u32 src, __u32 dst, __u16 tot_len, __u32 flags)
{
    if (flags & DEST_LOCAL)
        return skb->ingress_ifindex == LOOPBACK_IFINDEX ? UP_HERE : TO_LOOPBACK;
    __builtin_memset(fib, 0, sizeof(*fib));
    fib->family = 2; // AF_INET
    fib->l4_protocol = IPPROTO_UDP;
    fib->tot_len = tot_len;
    fib->ipv4_src = src;
    fib->ipv4_dst = dst;
    fib->ifindex = skb->ingress_ifindex;
    if (bpf_fib_lookup(skb, fib, sizeof(*fib), 0) == BPF_FIB_LKUP_RET_SUCCESS)
        return OUT_DEVICE;
    return -1;
}

// What a rewrite needs to know about the packet as it came in and as it leaves.
struct rewrite {
    __u32 old_saddr, old_daddr;
    __u32 old_ports; // source and destination port, as on the wire
    __u16 old_udp_len, new_udp_len;
    __u16 old_check;
    __u32 cd_word; // the ChannelData header removed (c2p) or added (p2c), as on the wire
    __u32 src_ip, dst_ip;
    __u16 src_port, dst_port;
};

// Bytes moved per helper call when the payload shifts (a stack buffer; power of two).
#define CHUNK 128
// The largest UDP payload moved (larger ones, beyond a 1500-byte MTU, go up).
#define MAX_CHUNKS 12
#define MAX_MOVE (MAX_CHUNKS * CHUNK)

// Moves `len` payload bytes at `from` to `to` (|from - to| = 4), in CHUNK pieces,
// front to back when moving down and back to front when moving up, so no piece
// overwrites bytes still to be read.
static __always_inline int move_bytes(struct __sk_buff *skb, __u32 from, __u32 to, __u32 len)
{
    __u8 buf[CHUNK];
    for (int i = 0; i < MAX_CHUNKS; i++) {
        __u32 done = i * CHUNK;
        if (done >= len)
            return 0;
        __u32 n = len - done;
        if (n > CHUNK)
            n = CHUNK;
        n = ((n - 1) & (CHUNK - 1)) + 1; // 1..CHUNK, as the verifier must see it
        __u32 at = to < from ? done : len - done - n;
        if (bpf_skb_load_bytes(skb, from + at, buf, n))
            return -1;
        if (bpf_skb_store_bytes(skb, to + at, buf, n, 0))
            return -1;
    }
    // Longer than MAX_MOVE never gets here: excluded before anything was changed.
    return len <= MAX_MOVE ? 0 : -1;
}

// Resizes the UDP payload by `delta` (-4 or +4) at its start, keeping the IP and UDP
// headers where they are: the payload moves. Needed for packets that leave through a
// device: one a local sender made may still carry CHECKSUM_PARTIAL, whose checksum a
// device computes from an offset that bpf_skb_adjust_room would leave pointing 4 bytes
// off. With +4 the new 4 bytes (at the payload's start) hold garbage until written.
static __always_inline int resize_payload(struct __sk_buff *skb, int delta, __u32 payload_len)
{
    __u32 start = UDP_OFF + sizeof(struct udphdr);
    if (delta < 0) {
        if (move_bytes(skb, start + 4, start, payload_len - 4))
            return -1;
        return bpf_skb_change_tail(skb, skb->len - 4, 0) ? -1 : 0;
    }
    if (bpf_skb_change_tail(skb, skb->len + 4, 0))
        return -1;
    return move_bytes(skb, start, start + 4, payload_len);
}

// Writes the new IPv4 and UDP headers. Handed up from loopback, the UDP checksum is 0
// (optional in IPv4, RFC 768; the stack then skips it). Otherwise it is updated from
// the old one (which a device may still have to complete: CHECKSUM_PARTIAL), in two
// parts as bpf_l4_csum_replace wants them: pseudo-header fields, then UDP header and
// payload. An old checksum of 0 ("none") stays 0.
static __always_inline int write_headers(struct __sk_buff *skb, const struct rewrite *r, int how,
                                         const struct bpf_fib_lookup *fib)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + IP_OFF;
    struct udphdr *udp = data + UDP_OFF;
    if ((void *)(udp + 1) > end)
        return -1;
    ip->saddr = r->src_ip;
    ip->daddr = r->dst_ip;
    ip->tot_len = bpf_htons(r->new_udp_len + sizeof(struct iphdr));
    ip->check = 0;
    ip->check = ip_checksum(ip);
    udp->source = r->src_port;
    udp->dest = r->dst_port;
    udp->len = bpf_htons(r->new_udp_len);
    if (how == UP_HERE) {
        // Came in on loopback from a local sender: nothing on the way could have
        // corrupted it, and the stack skips a zero checksum.
        udp->check = 0;
        return 0;
    }
    // From a device: keep the sender's checksum, updated, so that a datagram damaged
    // on the wire is still dropped by whoever verifies it.
    udp->check = r->old_check;
    if (how == OUT_DEVICE) {
        __builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
        __builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
    }
    if (r->old_check == 0)
        return 0;
    __u32 new_ports;
    __u16 ports[2] = { r->src_port, r->dst_port };
    __builtin_memcpy(&new_ports, ports, sizeof(new_ports));
    __u32 pseudo_from[3] = { r->old_saddr, r->old_daddr, bpf_htons(r->old_udp_len) };
    __u32 pseudo_to[3] = { r->src_ip, r->dst_ip, bpf_htons(r->new_udp_len) };
    __s64 d = bpf_csum_diff(pseudo_from, sizeof(pseudo_from), pseudo_to, sizeof(pseudo_to), 0);
    if (d < 0)
        return -1;
    __u32 csum_off = UDP_OFF + __builtin_offsetof(struct udphdr, check);
    if (bpf_l4_csum_replace(skb, csum_off, 0, d, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0))
        return -1;
    // The UDP length field, the ports, and the ChannelData header that went or came.
    __u32 from[3] = { r->old_ports, bpf_htons(r->old_udp_len), r->cd_word };
    __u32 to[3] = { new_ports, bpf_htons(r->new_udp_len), r->cd_word };
    if (r->new_udp_len < r->old_udp_len)
        d = bpf_csum_diff(from, sizeof(from), to, 8, 0);
    else
        d = bpf_csum_diff(from, 8, to, sizeof(to), 0);
    if (d < 0)
        return -1;
    return bpf_l4_csum_replace(skb, csum_off, 0, d, BPF_F_MARK_MANGLED_0) ? -1 : 0;
}

// Resizes, rewrites and sends the packet on; `delta` is -4 (strip the ChannelData
// header) or +4 (make room for it, then write `r->cd_word` there).
static __always_inline int forward(struct __sk_buff *skb, const struct rewrite *r, int how,
                                   const struct bpf_fib_lookup *fib, int delta,
                                   __u32 payload_len, __u32 stat_slot)
{
    if (how == OUT_DEVICE) {
        if (resize_payload(skb, delta, payload_len))
            return TC_ACT_SHOT; // half-moved: unusable
    } else {
        // The cheap way, for delivery on this host: room after the IP header, the UDP
        // header rewritten 4 bytes earlier (-4) or later (+4) than it was.
        if (bpf_skb_adjust_room(skb, delta, BPF_ADJ_ROOM_NET, 0))
            return TC_ACT_OK; // nothing changed yet: let user space have it
    }
    if (delta > 0) {
        void *data = (void *)(long)skb->data;
        void *end = (void *)(long)skb->data_end;
        __u32 *cd = data + UDP_OFF + sizeof(struct udphdr);
        if ((void *)(cd + 1) > end)
            return TC_ACT_SHOT;
        *cd = r->cd_word;
    }
    if (write_headers(skb, r, how, fib))
        return TC_ACT_SHOT;
    // Packets then bytes: STAT_*_PACKETS + 1 is the matching bytes slot.
    count(stat_slot, 1);
    count(stat_slot + 1, delta < 0 ? payload_len - 4 : payload_len);
    if (how == UP_HERE)
        return TC_ACT_OK;
    if (how == TO_LOOPBACK)
        return bpf_redirect(LOOPBACK_IFINDEX, BPF_F_INGRESS);
    return bpf_redirect(fib->ifindex, 0);
}

SEC("classifier")
int turnpike_channel_tc(struct __sk_buff *skb)
{
    // One shape only: untagged IPv4/UDP without options or fragments, one datagram
    // per skb (a GSO super-packet holds several and goes up whole).
    if (skb->protocol != bpf_htons(ETH_P_IP) || skb->gso_size != 0 || skb->vlan_present)
        return TC_ACT_OK;
    int from_loopback = skb->ingress_ifindex == LOOPBACK_IFINDEX;
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct iphdr *ip = data + IP_OFF;
    struct udphdr *udp = data + UDP_OFF;
    if ((void *)(udp + 1) > end)
        return TC_ACT_OK;
    if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff)))
        return TC_ACT_OK;
    __u16 udp_len = bpf_ntohs(udp->len);
    if (udp_len < sizeof(struct udphdr) || udp_len + sizeof(struct iphdr) != bpf_ntohs(ip->tot_len))
        return TC_ACT_OK;
    __u16 payload_len = udp_len - sizeof(struct udphdr);
    struct bpf_fib_lookup fib;
    struct rewrite r = {
        .old_saddr = ip->saddr,
        .old_daddr = ip->daddr,
        .old_ports = *(__u32 *)&udp->source,
        .old_udp_len = udp_len,
        .old_check = udp->check,
    };

    // Peer -> client: a bound peer's datagram to a relayed address.
    struct p2c_key pk = {
        .peer_ip = ip->saddr,
        .relay_ip = ip->daddr,
        .peer_port = udp->source,
        .relay_port = udp->dest,
    };
    struct p2c_val *pv = bpf_map_lookup_elem(&P2C, &pk);
    if (pv) {
        if ((pv->flags & SRC_LOCAL) && !from_loopback)
            return TC_ACT_OK;
        // The clock is read only for packets of a route: every other UDP packet on
        // the interface passes through here too.
        if (bpf_ktime_get_ns() >= pv->expires_ns) {
            count(STAT_EXPIRED, 1);
            return TC_ACT_OK;
        }
        r.new_udp_len = udp_len + 4;
        // Copied out: the map may change under us.
        r.src_ip = pv->server_ip;
        r.dst_ip = pv->client_ip;
        r.src_port = pv->server_port;
        r.dst_port = pv->client_port;
        r.cd_word = bpf_htonl(((__u32)pv->channel << 16) | payload_len);
        int how = route(skb, &fib, r.src_ip, r.dst_ip, r.new_udp_len + sizeof(struct iphdr),
                        pv->flags);
        if (how < 0 || (how == OUT_DEVICE && payload_len > MAX_MOVE))
            return TC_ACT_OK;
        return forward(skb, &r, how, &fib, 4, payload_len, STAT_P2C_PACKETS);
    }

    // Client -> peer: ChannelData (first two bits 01: 0x4000-0x7fff, RFC 5766 numbers
    // too) whose length fills the datagram exactly (padding, allowed but rare on UDP,
    // goes up).
    __u8 *cd = (void *)(udp + 1);
    if ((void *)(cd + 4) > end || (cd[0] & 0xc0) != 0x40)
        return TC_ACT_OK;
    __u16 channel = ((__u16)cd[0] << 8) | cd[1];
    __u16 cd_len = ((__u16)cd[2] << 8) | cd[3];
    if (cd_len + 4 != payload_len)
        return TC_ACT_OK;
    r.cd_word = *(__u32 *)cd;
    struct c2p_key ck = {
        .client_ip = ip->saddr,
        .server_ip = ip->daddr,
        .client_port = udp->source,
        .server_port = udp->dest,
        .channel = channel,
    };
    struct c2p_val *cv = bpf_map_lookup_elem(&C2P, &ck);
    if (!cv || ((cv->flags & SRC_LOCAL) && !from_loopback))
        return TC_ACT_OK;
    if (bpf_ktime_get_ns() >= cv->expires_ns) {
        count(STAT_EXPIRED, 1);
        return TC_ACT_OK;
    }
    r.new_udp_len = udp_len - 4;
    r.src_ip = cv->relay_ip;
    r.dst_ip = cv->peer_ip;
    r.src_port = cv->relay_port;
    r.dst_port = cv->peer_port;
    int how = route(skb, &fib, r.src_ip, r.dst_ip, r.new_udp_len + sizeof(struct iphdr),
                    cv->flags);
    if (how < 0 || (how == OUT_DEVICE && payload_len > MAX_MOVE))
        return TC_ACT_OK;
    return forward(skb, &r, how, &fib, -4, payload_len, STAT_C2P_PACKETS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
