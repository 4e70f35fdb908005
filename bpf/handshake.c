//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// ipng-stats handshake programs: count the stages of TCP handshakes per
// (ingress interface, family, VIP, port) for the interfaces bound to a
// source tag, so that a broken return path (DSR through a tunnel) shows in
// the kernel before it shows as missing HTTP requests.
//
//   ipng_hs_ingress  tc/tcx ingress on each bound device: TCP SYNs (SYN set,
//                    ACK clear) to a port in ipng_hs_ports. It runs where
//                    the packet enters, before routing and reverse-path
//                    filtering can drop it.
//   ipng_hs_egress   tc/tcx egress on each bound device: SYN-ACKs from a
//                    port in ipng_hs_ports that leave through the bound
//                    device itself. In a DSR setup that must never happen.
//   ipng_hs_sockops  sock_ops, attached to the agent's cgroup next to the
//                    stamping program: BPF_SOCK_OPS_RWND_INIT of a request
//                    socket, which the stack calls once for each SYN it is
//                    about to answer with a SYN-ACK (not for retransmitted
//                    SYN-ACKs). The ingress program leaves the 4-tuple of
//                    each counted SYN and its interface in a per-CPU slot
//                    (ipng_hs_syns, indexed by a hash of the 4-tuple); the
//                    stack answers a SYN on the CPU that received it, in
//                    the same softirq, so the sock_ops program finds it
//                    there and counts the SYN-ACK for the interface its SYN
//                    arrived on. Listeners outside the cgroup, or of other
//                    network namespaces, are not seen.
//
// Handshakes completed are counted by the sock_ops program (ipng_conns).
// The tc programs always return TC_ACT_UNSPEC (TCX_NEXT): they never drop,
// redirect or change a packet, and the next program of the device runs.
//
// Each tc program comes in two variants, chosen per device by the agent:
//
//   ipng_hs_ingress, ipng_hs_egress   devices with Ethernet headers (veth,
//                    VLAN, macvlan, VXLAN, GRETAP, bonds, bridges, NICs).
//                    The common path (not a SYN, not a SYN-ACK: nearly
//                    every packet) reads the TCP flags with direct packet
//                    access at fixed offsets behind a 14-byte Ethernet
//                    header and an IP header without options, and returns:
//                    no helper call, no map lookup. Anything else (a tag
//                    left in the packet, IPv4 options, headers outside the
//                    linear data) takes the generic path below.
//   ipng_hs_in_l3, ipng_hs_out_l3     every other device (L3 tunnels such as
//                    GRE and IPIP, loopback, WireGuard): the generic path.
//
// The generic path reads the headers relative to the network header
// (bpf_skb_load_bytes_relative with BPF_HDR_START_NET), wherever the link
// layer puts it; it counts what the fast path counts. A SYN (SYN-ACK) of
// the plain layout is counted from the packet in place, without reading
// its headers a second time. IPv6 extension headers are not walked: a SYN
// behind one is not counted.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "skops_addrs.h"

#define AF_INET 2
#define AF_INET6 10
#define TC_ACT_UNSPEC (-1)

char __license[] SEC("license") = "GPL";

// One series of handshake counts.
struct ipng_hs_key {
	__u32 ifindex;
	__u16 port;           // host byte order
	__u8 family;          // 4 or 6
	__u8 _pad;
	__u8 vip[16];         // local address, IPv4 v4-mapped
};

struct ipng_hs_count {
	__u64 syn_received;
	__u64 synack_sent;
	__u64 synack_wrong_egress;
};

enum ipng_hs_counter {
	IPNG_HS_CNT_FULL = 0,      // ipng_hs_counts full: a packet not counted
	IPNG_HS_CNT_MAX,
};

// Set at load time: the cookie of the agent's network namespace.
volatile const __u64 own_netns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ipng_hs_key);
	__type(value, struct ipng_hs_count);
} ipng_hs_counts SEC(".maps");

// Ports whose handshakes are counted (host byte order); written by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} ipng_hs_ports SEC(".maps");

// The 4-tuple of a SYN counted at ingress.
struct ipng_hs_tuple {
	__u8 local_addr[16];  // IPv4 v4-mapped
	__u8 remote_addr[16];
	__u16 local_port;     // host byte order
	__u16 remote_port;    // host byte order
	__u8 family;
	__u8 _pad[3];
} __attribute__((aligned(8))); // compared as five 64-bit words

// One SYN counted at ingress: its 4-tuple and the device it arrived on.
struct ipng_hs_slot {
	struct ipng_hs_tuple tup;
	__u32 ifindex;
	__u32 _pad;
};

// The SYNs counted at ingress, per CPU, at the slot of a hash of their
// 4-tuple, until their SYN-ACK is counted. The stack answers a SYN on the
// CPU whose tc ingress saw it, in the same softirq (listeners take SYNs
// without the socket lock), so nothing else runs on that CPU between the
// write and the read: the slot is found, whatever other CPUs do. Only a
// SYN that something holds back between the device and TCP (NFQUEUE, a
// redirect by a later tc program) can find its slot taken by another SYN
// of the same CPU and hash; its SYN-ACK is then not counted. A per-CPU
// array instead of a hash of 4-tuples (an LRU hash before): no lock, no
// hashing in the kernel, no element to allocate or free, and no cache
// line shared between CPUs (the array lookup is inlined by the verifier on
// kernels from 6.11).
#define IPNG_HS_SLOTS 256

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IPNG_HS_SLOTS);
	__type(key, __u32);
	__type(value, struct ipng_hs_slot);
} ipng_hs_syns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IPNG_HS_CNT_MAX);
	__type(key, enum ipng_hs_counter);
	__type(value, __u64);
} ipng_hs_counters SEC(".maps");

enum stage {
	STAGE_SYN,
	STAGE_SYNACK,
	STAGE_WRONG_EGRESS,
};

// bump adds one to the stage of key's series. A real (noinline) function,
// so that the key and value structs are described in BTF for bpf2go -type.
static __noinline int bump(struct ipng_hs_key *key, int stage)
{
	struct ipng_hs_count *c, zero = {};
	enum ipng_hs_counter idx = IPNG_HS_CNT_FULL;
	__u64 *full;

	c = bpf_map_lookup_elem(&ipng_hs_counts, key);
	if (!c) {
		// Another CPU may create it at the same time: then NOEXIST
		// fails and the lookup finds theirs.
		bpf_map_update_elem(&ipng_hs_counts, key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&ipng_hs_counts, key);
		if (!c) {
			full = bpf_map_lookup_elem(&ipng_hs_counters, &idx);
			if (full)
				*full += 1;
			return 0;
		}
	}
	if (stage == STAGE_SYN)
		c->syn_received += 1;
	else if (stage == STAGE_SYNACK)
		c->synack_sent += 1;
	else
		c->synack_wrong_egress += 1;
	return 0;
}

static __always_inline void put_v4mapped(__u8 dst[16], __u32 addr_be)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &addr_be, 4);
}

// TCP flag bits of byte 13 of the TCP header.
#define F_SYN 0x02
#define F_ACK 0x10

// tup_slot is the slot of tup in ipng_hs_syns: a multiplicative hash of
// the 4-tuple's words folded together (the same in the tc program and in
// sock_ops).
static __always_inline __u32 tup_slot(const struct ipng_hs_tuple *tup)
{
	const __u32 *l = (const __u32 *)tup->local_addr;
	const __u32 *r = (const __u32 *)tup->remote_addr;
	__u32 x = l[0] ^ l[1] ^ l[2] ^ l[3] ^ r[0] ^ r[1] ^ r[2] ^ r[3];

	x ^= (__u32)tup->local_port << 16 | tup->remote_port;
	return (x * 0x9e3779b1u) >> 24; // IPNG_HS_SLOTS = 1 << 8
}

// count counts a SYN (ingress) or a SYN-ACK (egress) whose addresses and
// ports are in tup (local = the VIP: the destination at ingress, the
// source at egress), if its port is counted; a SYN's 4-tuple and device
// are left in its slot for the sock_ops program.
static __always_inline int count(struct __sk_buff *skb, struct ipng_hs_tuple *tup, int ingress)
{
	struct ipng_hs_key key = {};
	struct ipng_hs_slot *slot;
	__u32 idx;
	__u16 port = tup->local_port;

	if (!bpf_map_lookup_elem(&ipng_hs_ports, &port))
		return TC_ACT_UNSPEC;
	key.ifindex = skb->ifindex;
	key.port = port;
	key.family = tup->family;
	__builtin_memcpy(key.vip, tup->local_addr, 16);
	bump(&key, ingress ? STAGE_SYN : STAGE_WRONG_EGRESS);
	if (ingress) {
		idx = tup_slot(tup);
		slot = bpf_map_lookup_elem(&ipng_hs_syns, &idx);
		if (slot) {
			__builtin_memcpy(&slot->tup, tup, sizeof(*tup));
			slot->ifindex = key.ifindex;
		}
	}
	return TC_ACT_UNSPEC;
}

// tup4 fills tup from an IPv4 packet's addresses and the first four bytes
// of its TCP header (the ports), local being the destination at ingress.
static __always_inline void tup4(struct ipng_hs_tuple *tup, __u32 saddr, __u32 daddr, const __u8 *tcp, int ingress)
{
	__u16 sport = (__u16)tcp[0] << 8 | tcp[1], dport = (__u16)tcp[2] << 8 | tcp[3];

	tup->family = 4;
	put_v4mapped(tup->local_addr, ingress ? daddr : saddr);
	put_v4mapped(tup->remote_addr, ingress ? saddr : daddr);
	tup->local_port = ingress ? dport : sport;
	tup->remote_port = ingress ? sport : dport;
}

// tup6 is tup4 for IPv6.
static __always_inline void tup6(struct ipng_hs_tuple *tup, const struct ipv6hdr *ip6, const __u8 *tcp, int ingress)
{
	__u16 sport = (__u16)tcp[0] << 8 | tcp[1], dport = (__u16)tcp[2] << 8 | tcp[3];

	tup->family = 6;
	__builtin_memcpy(tup->local_addr, ingress ? &ip6->daddr : &ip6->saddr, 16);
	__builtin_memcpy(tup->remote_addr, ingress ? &ip6->saddr : &ip6->daddr, 16);
	tup->local_port = ingress ? dport : sport;
	tup->remote_port = ingress ? sport : dport;
}

// handle reads the IP and TCP headers of skb relative to its network
// header. want is the flags byte (SYN|ACK masked) to count; ingress picks
// the destination as the VIP, egress the source.
static __always_inline int handle(struct __sk_buff *skb, __u8 want, int ingress)
{
	struct ipng_hs_tuple tup = {};
	__u8 tcp[14]; // ports, seq, ack, data offset, flags
	__u32 off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct {
			struct iphdr ip;
			__u8 tcp[14];
		} h;

		// One load for the IP header without options and the TCP
		// flags (nearly every packet); a second one only with options.
		if (bpf_skb_load_bytes_relative(skb, 0, &h, sizeof(h), BPF_HDR_START_NET))
			return TC_ACT_UNSPEC;
		if (h.ip.protocol != IPPROTO_TCP || (h.ip.frag_off & bpf_htons(0x1fff)))
			return TC_ACT_UNSPEC;
		off = h.ip.ihl * 4;
		if (off < sizeof(h.ip))
			return TC_ACT_UNSPEC;
		if (off == sizeof(h.ip))
			__builtin_memcpy(tcp, h.tcp, sizeof(tcp));
		else if (bpf_skb_load_bytes_relative(skb, off, tcp, sizeof(tcp), BPF_HDR_START_NET))
			return TC_ACT_UNSPEC;
		if ((tcp[13] & (F_SYN | F_ACK)) != want)
			return TC_ACT_UNSPEC;
		tup4(&tup, h.ip.saddr, h.ip.daddr, tcp, ingress);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct {
			struct ipv6hdr ip6;
			__u8 tcp[14];
		} h;

		if (bpf_skb_load_bytes_relative(skb, 0, &h, sizeof(h), BPF_HDR_START_NET))
			return TC_ACT_UNSPEC;
		if (h.ip6.nexthdr != IPPROTO_TCP || (h.tcp[13] & (F_SYN | F_ACK)) != want)
			return TC_ACT_UNSPEC;
		tup6(&tup, &h.ip6, h.tcp, ingress);
	} else {
		return TC_ACT_UNSPEC;
	}
	return count(skb, &tup, ingress);
}

#define IP4_HLEN 20
#define IP6_HLEN 40

// handle_eth is handle for a device with Ethernet headers: the TCP flags
// are tested first, read in place, and a packet whose flags are want is
// counted from the packet in place too; only a frame whose layout is not
// the plain one goes on to handle.
static __always_inline int handle_eth(struct __sk_buff *skb, __u8 want, int ingress)
{
	__u8 *p = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u16 proto = skb->protocol;
	struct ipng_hs_tuple tup = {};

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(p + ETH_HLEN);

		if ((void *)(p + ETH_HLEN + IP4_HLEN + 14) > end ||
		    *(__u16 *)(p + 12) != proto || p[ETH_HLEN] != 0x45)
			return handle(skb, want, ingress);
		if ((p[ETH_HLEN + IP4_HLEN + 13] & (F_SYN | F_ACK)) != want)
			return TC_ACT_UNSPEC;
		// A SYN (SYN-ACK): rare. Only now the protocol and fragments.
		if (ip->protocol != IPPROTO_TCP || (ip->frag_off & bpf_htons(0x1fff)))
			return TC_ACT_UNSPEC;
		tup4(&tup, ip->saddr, ip->daddr, p + ETH_HLEN + IP4_HLEN, ingress);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if ((void *)(p + ETH_HLEN + IP6_HLEN + 14) > end || *(__u16 *)(p + 12) != proto)
			return handle(skb, want, ingress);
		if (p[ETH_HLEN + 6] != IPPROTO_TCP ||
		    (p[ETH_HLEN + IP6_HLEN + 13] & (F_SYN | F_ACK)) != want)
			return TC_ACT_UNSPEC;
		tup6(&tup, (void *)(p + ETH_HLEN), p + ETH_HLEN + IP6_HLEN, ingress);
	} else {
		return TC_ACT_UNSPEC;
	}
	return count(skb, &tup, ingress);
}

SEC("tc")
int ipng_hs_ingress(struct __sk_buff *skb)
{
	return handle_eth(skb, F_SYN, 1);
}

SEC("tc")
int ipng_hs_egress(struct __sk_buff *skb)
{
	return handle_eth(skb, F_SYN | F_ACK, 0);
}

SEC("tc")
int ipng_hs_in_l3(struct __sk_buff *skb)
{
	return handle(skb, F_SYN, 1);
}

SEC("tc")
int ipng_hs_out_l3(struct __sk_buff *skb)
{
	return handle(skb, F_SYN | F_ACK, 0);
}

// tup_equal compares two 4-tuples as five 64-bit words (padding zero).
static __always_inline int tup_equal(const struct ipng_hs_tuple *x, const struct ipng_hs_tuple *y)
{
	const __u64 *a = (const __u64 *)x, *b = (const __u64 *)y;

	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4];
}

static __always_inline int is_v4mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

// synack counts the SYN-ACK a request socket is about to send, for the
// interface its SYN was counted on (the slot the ingress program left on
// this CPU).
static __always_inline void synack(struct bpf_sock_ops *skops)
{
	struct ipng_hs_tuple tup = {};
	struct ipng_hs_key key = {};
	struct ipng_skops_addrs a;
	struct ipng_hs_slot *slot;
	__u32 idx;

	ipng_read_addrs(skops, &a);
	if (bpf_get_netns_cookie(skops) != own_netns)
		return;
	if (a.family == AF_INET) {
		tup.family = 4;
		put_v4mapped(tup.local_addr, a.l4);
		put_v4mapped(tup.remote_addr, a.r4);
	} else if (a.family == AF_INET6) {
		tup.family = is_v4mapped(a.l6) ? 4 : 6;
		__builtin_memcpy(tup.local_addr, a.l6, 16);
		__builtin_memcpy(tup.remote_addr, a.r6, 16);
	} else {
		return;
	}
	tup.local_port = a.lport;
	tup.remote_port = bpf_ntohs(a.rport);
	idx = tup_slot(&tup);
	slot = bpf_map_lookup_elem(&ipng_hs_syns, &idx);
	if (!slot || !tup_equal(&slot->tup, &tup))
		return;
	key.ifindex = slot->ifindex;
	key.port = tup.local_port;
	key.family = tup.family;
	__builtin_memcpy(key.vip, tup.local_addr, 16);
	slot->tup.family = 0; // counted once
	bump(&key, STAGE_SYNACK);
}

SEC("sockops")
int ipng_hs_sockops(struct bpf_sock_ops *skops)
{
	// RWND_INIT of a request socket: a SYN is about to be answered (an
	// active open calls it with a full socket).
	if (skops->op == BPF_SOCK_OPS_RWND_INIT && !skops->is_fullsock)
		synack(skops);
	// Never touch skops->reply: other programs of the cgroup may set it.
	return 1;
}
