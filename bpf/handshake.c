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
//   ipng_hs_synack   fexit of tcp_make_synack: SYN-ACKs the stack built in
//                    answer to a new SYN (retransmissions carry no SYN and
//                    are not counted), keyed by the interface that SYN
//                    arrived on, when that interface is in ipng_hs_ifaces
//                    and the listener is in the agent's network namespace.
//
// Handshakes completed are counted by the sock_ops program (ipng_conns).
// The tc programs always return TC_ACT_UNSPEC (TCX_NEXT): they never drop,
// redirect or change a packet, and the next program of the device runs.
//
// Headers are read relative to the network header (bpf_skb_load_bytes_relative
// with BPF_HDR_START_NET), so the same program serves Ethernet, VLAN and
// L3 tunnel devices (GRE, IPIP) alike. IPv6 extension headers are not walked:
// a SYN behind one is not counted.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

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

// Bound interfaces (ifindex) of the agent's namespace; written by the agent.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} ipng_hs_ifaces SEC(".maps");

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

// classify reads the IP and TCP headers of skb. want is the flags byte
// (SYN|ACK masked) to count; ingress picks the destination as the VIP,
// egress the source.
static __always_inline int handle(struct __sk_buff *skb, __u8 want, int ingress)
{
	struct ipng_hs_key key = {};
	__u8 tcp[14]; // ports, seq, ack, data offset, flags
	__u32 off;
	__u16 port;

	key.ifindex = skb->ifindex;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes_relative(skb, 0, &ip, sizeof(ip), BPF_HDR_START_NET))
			return TC_ACT_UNSPEC;
		if (ip.protocol != IPPROTO_TCP || (ip.frag_off & bpf_htons(0x1fff)))
			return TC_ACT_UNSPEC;
		off = ip.ihl * 4;
		if (off < sizeof(ip))
			return TC_ACT_UNSPEC;
		if (bpf_skb_load_bytes_relative(skb, off, tcp, sizeof(tcp), BPF_HDR_START_NET))
			return TC_ACT_UNSPEC;
		if ((tcp[13] & (F_SYN | F_ACK)) != want)
			return TC_ACT_UNSPEC;
		key.family = 4;
		put_v4mapped(key.vip, ingress ? ip.daddr : ip.saddr);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes_relative(skb, 0, &ip6, sizeof(ip6), BPF_HDR_START_NET))
			return TC_ACT_UNSPEC;
		if (ip6.nexthdr != IPPROTO_TCP)
			return TC_ACT_UNSPEC;
		if (bpf_skb_load_bytes_relative(skb, sizeof(ip6), tcp, sizeof(tcp), BPF_HDR_START_NET))
			return TC_ACT_UNSPEC;
		if ((tcp[13] & (F_SYN | F_ACK)) != want)
			return TC_ACT_UNSPEC;
		key.family = 6;
		if (ingress)
			__builtin_memcpy(key.vip, &ip6.daddr, 16);
		else
			__builtin_memcpy(key.vip, &ip6.saddr, 16);
	} else {
		return TC_ACT_UNSPEC;
	}
	// Destination port at ingress, source port at egress (network order).
	port = ingress ? ((__u16)tcp[2] << 8 | tcp[3]) : ((__u16)tcp[0] << 8 | tcp[1]);
	if (!bpf_map_lookup_elem(&ipng_hs_ports, &port))
		return TC_ACT_UNSPEC;
	key.port = port;
	bump(&key, ingress ? STAGE_SYN : STAGE_WRONG_EGRESS);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int ipng_hs_ingress(struct __sk_buff *skb)
{
	return handle(skb, F_SYN, 1);
}

SEC("tc")
int ipng_hs_egress(struct __sk_buff *skb)
{
	return handle(skb, F_SYN | F_ACK, 0);
}

// Kernel structs read through BTF, with only the fields used; CO-RE
// relocates their offsets at load time.
struct in6_addr___ipng {
	__u8 b[16];
};

struct net {
	__u64 net_cookie;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_rcv_saddr;
	__u16 skc_num;
	unsigned short skc_family;
	struct {
		struct net *net;
	} skc_net;
	struct in6_addr___ipng skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct request_sock {
	struct sock_common __req_common;
} __attribute__((preserve_access_index));

struct sk_buff {
	int skb_iif;
} __attribute__((preserve_access_index));

struct sock;
struct dst_entry;
struct tcp_fastopen_cookie;

SEC("fexit/tcp_make_synack")
int BPF_PROG(ipng_hs_synack, const struct sock *sk, struct dst_entry *dst,
	     struct request_sock *req, struct tcp_fastopen_cookie *foc,
	     int synack_type, struct sk_buff *syn_skb, struct sk_buff *ret)
{
	struct ipng_hs_key key = {};
	struct net *net;
	__u16 family;
	__u32 ifindex;

	// No SYN: a retransmission (tcp_rtx_synack). No skb built: nothing sent.
	if (!syn_skb || !ret || !req)
		return 0;
	net = BPF_CORE_READ(req, __req_common.skc_net.net);
	if (!net || BPF_CORE_READ(net, net_cookie) != own_netns)
		return 0;
	ifindex = BPF_CORE_READ(syn_skb, skb_iif);
	if (!bpf_map_lookup_elem(&ipng_hs_ifaces, &ifindex))
		return 0;
	key.port = BPF_CORE_READ(req, __req_common.skc_num);
	if (!bpf_map_lookup_elem(&ipng_hs_ports, &key.port))
		return 0;
	key.ifindex = ifindex;
	family = BPF_CORE_READ(req, __req_common.skc_family);
	if (family == AF_INET) {
		key.family = 4;
		put_v4mapped(key.vip, BPF_CORE_READ(req, __req_common.skc_rcv_saddr));
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&key.vip, req, __req_common.skc_v6_rcv_saddr);
		// A v4-mapped local address is an IPv4 connection on a v6 socket.
		key.family = (((__u32 *)key.vip)[0] == 0 && ((__u32 *)key.vip)[1] == 0 &&
			      ((__u32 *)key.vip)[2] == bpf_htonl(0x0000ffff)) ? 4 : 6;
	} else {
		return 0;
	}
	bump(&key, STAGE_SYNACK);
	return 0;
}
