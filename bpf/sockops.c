//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// ipng-stats sock_ops program: stamp every passively established (accepted)
// TCP socket with the interface its handshake arrived on.
//
// The stamp is stored three ways so that every kind of consumer can find it:
//   ipng_sk         SK_STORAGE, looked up from user space by socket fd, freed
//                   with the socket;
//   ipng_by_cookie  LRU hash keyed by socket cookie (SO_COOKIE), deleted when
//                   the socket closes;
//   ipng_by_tuple   LRU hash keyed by (netns cookie, 4-tuple), left behind when
//                   the socket closes so that consumers that learn of a
//                   connection late (an access log line) still find it.
// ipng_events is a ring buffer of open/close events, so that the agent can
// count connections per interface for servers it knows nothing about.
// ipng_counters is a per-CPU array of the program's own counters.
//
// No vmlinux.h: the two kernel structs read through BTF are declared below
// with only the fields we use, and CO-RE relocates their offsets at load time.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10

char __license[] SEC("license") = "GPL";

struct sk_buff {
	int skb_iif;
} __attribute__((preserve_access_index));

struct bpf_sock_ops_kern {
	struct sk_buff *skb;
} __attribute__((preserve_access_index));

struct sock {
	int sk_rx_dst_ifindex;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

// Where a stamp's ifindex came from.
enum ipng_source {
	IPNG_SOURCE_SKB = 1,    // skb_iif of the skb that completed the handshake
	IPNG_SOURCE_RX_DST = 2, // the socket's cached input route (sk_rx_dst_ifindex)
};

enum ipng_counter {
	IPNG_CNT_STAMPED = 0,        // accepted sockets stamped with an ifindex
	IPNG_CNT_SKB_MISSING,        // no skb in the callback; fell back to sk_rx_dst_ifindex
	IPNG_CNT_NO_IFINDEX,         // neither source gave an ifindex; socket not stamped
	IPNG_CNT_STORAGE_FAILED,     // bpf_sk_storage_get could not create the entry
	IPNG_CNT_COOKIE_FAILED,      // update of ipng_by_cookie failed
	IPNG_CNT_TUPLE_FAILED,       // update of ipng_by_tuple failed
	IPNG_CNT_CLOSED,             // stamped sockets seen closing
	IPNG_CNT_EVENT_LOST,         // ipng_events ring buffer full (no reader, or a slow one)
	IPNG_CNT_MAX,
};

struct ipng_tuple {
	__u64 netns_cookie;
	__u8 local_addr[16];  // IPv4 stored v4-mapped (::ffff:a.b.c.d)
	__u8 remote_addr[16];
	__u16 local_port;     // host byte order
	__u16 remote_port;    // host byte order
	__u32 _pad;
};

struct ipng_stamp {
	struct ipng_tuple tuple;
	__u64 cookie;         // socket cookie
	__u64 stamped_ns;     // CLOCK_MONOTONIC (bpf_ktime_get_ns) at accept
	__u32 ifindex;        // ingress interface
	enum ipng_source source;
	__u8 family;          // IP version of the connection: 4 or 6 (v4-mapped is 4)
	__u8 _pad[7];
};

enum ipng_event_type {
	IPNG_EVENT_OPEN = 1,
	IPNG_EVENT_CLOSE = 2,
};

struct ipng_event {
	struct ipng_stamp stamp;
	enum ipng_event_type type;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ipng_stamp);
} ipng_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct ipng_stamp);
} ipng_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ipng_tuple);
	__type(value, struct ipng_stamp);
} ipng_by_tuple SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IPNG_CNT_MAX);
	__type(key, enum ipng_counter);
	__type(value, __u64);
} ipng_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} ipng_events SEC(".maps");

static __always_inline void count(enum ipng_counter idx)
{
	__u64 *v = bpf_map_lookup_elem(&ipng_counters, &idx);

	if (v)
		*v += 1;
}

// A real (noinline) function, so that struct ipng_event and its enum are
// described in the object's BTF for bpf2go -type.
static __noinline void fill_event(struct ipng_event *ev, const struct ipng_stamp *st,
				  enum ipng_event_type type)
{
	ev->stamp = *st;
	ev->type = type;
	ev->_pad = 0;
}

static __always_inline void emit(const struct ipng_stamp *st, enum ipng_event_type type)
{
	struct ipng_event *ev = bpf_ringbuf_reserve(&ipng_events, sizeof(*ev), 0);

	if (!ev) {
		count(IPNG_CNT_EVENT_LOST);
		return;
	}
	fill_event(ev, st, type);
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline void put_v4mapped(__u8 dst[16], __u32 addr_be)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &addr_be, 4);
}

static __always_inline int is_v4mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

static __always_inline __u32 ingress_ifindex(struct bpf_sock_ops *skops, enum ipng_source *source)
{
	struct bpf_sock_ops_kern *kctx = bpf_cast_to_kern_ctx(skops);
	struct sk_buff *skb = kctx->skb;
	struct bpf_sock *sk;
	struct tcp_sock *tp;
	__u32 ifindex = 0;

	if (skb) {
		ifindex = skb->skb_iif;
		if (ifindex) {
			*source = IPNG_SOURCE_SKB;
			return ifindex;
		}
	} else {
		count(IPNG_CNT_SKB_MISSING);
	}

	sk = skops->sk;
	if (!sk)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	ifindex = ((struct sock *)tp)->sk_rx_dst_ifindex;
	*source = IPNG_SOURCE_RX_DST;
	return ifindex;
}

static __always_inline void stamp(struct bpf_sock_ops *skops)
{
	struct ipng_stamp st = {};
	struct ipng_stamp *stored;
	__u32 l6[4], r6[4];
	__u32 l4, r4, lport, rport, family;

	// Read every context field before branching: clang may otherwise merge
	// the v4 and v6 loads into one variable-offset ctx access, which the
	// verifier rejects.
	family = skops->family;
	l4 = skops->local_ip4;
	r4 = skops->remote_ip4;
	l6[0] = skops->local_ip6[0];
	l6[1] = skops->local_ip6[1];
	l6[2] = skops->local_ip6[2];
	l6[3] = skops->local_ip6[3];
	r6[0] = skops->remote_ip6[0];
	r6[1] = skops->remote_ip6[1];
	r6[2] = skops->remote_ip6[2];
	r6[3] = skops->remote_ip6[3];
	lport = skops->local_port;         // host byte order
	rport = skops->remote_port >> 16;  // network byte order, upper 16 bits

	st.ifindex = ingress_ifindex(skops, &st.source);
	if (!st.ifindex) {
		count(IPNG_CNT_NO_IFINDEX);
		return;
	}

	if (family == AF_INET6 && !is_v4mapped(l6)) {
		st.family = 6;
		__builtin_memcpy(st.tuple.local_addr, l6, 16);
		__builtin_memcpy(st.tuple.remote_addr, r6, 16);
	} else if (family == AF_INET6) {
		st.family = 4;
		__builtin_memcpy(st.tuple.local_addr, l6, 16);
		__builtin_memcpy(st.tuple.remote_addr, r6, 16);
	} else if (family == AF_INET) {
		st.family = 4;
		put_v4mapped(st.tuple.local_addr, l4);
		put_v4mapped(st.tuple.remote_addr, r4);
	} else {
		return;
	}
	st.tuple.local_port = lport;
	st.tuple.remote_port = bpf_ntohs(rport);
	st.tuple.netns_cookie = bpf_get_netns_cookie(skops);
	st.cookie = bpf_get_socket_cookie(skops);
	st.stamped_ns = bpf_ktime_get_ns();

	if (skops->sk) {
		stored = bpf_sk_storage_get(&ipng_sk, skops->sk, &st,
					    BPF_SK_STORAGE_GET_F_CREATE);
		if (!stored)
			count(IPNG_CNT_STORAGE_FAILED);
		else
			*stored = st;
	} else {
		count(IPNG_CNT_STORAGE_FAILED);
	}
	if (bpf_map_update_elem(&ipng_by_cookie, &st.cookie, &st, BPF_ANY))
		count(IPNG_CNT_COOKIE_FAILED);
	if (bpf_map_update_elem(&ipng_by_tuple, &st.tuple, &st, BPF_ANY))
		count(IPNG_CNT_TUPLE_FAILED);

	// Ask for state changes so the cookie entry goes when the socket does.
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
					 BPF_SOCK_OPS_STATE_CB_FLAG);
	count(IPNG_CNT_STAMPED);
	emit(&st, IPNG_EVENT_OPEN);
}

static __always_inline void closed(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct ipng_stamp *st = bpf_map_lookup_elem(&ipng_by_cookie, &cookie);

	if (!st)
		return;
	emit(st, IPNG_EVENT_CLOSE);
	bpf_map_delete_elem(&ipng_by_cookie, &cookie);
	count(IPNG_CNT_CLOSED);
}

SEC("sockops")
int ipng_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		stamp(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			closed(skops);
		break;
	}
	return 1;
}
