//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// ipng-stats sock_ops program: stamp every passively established (accepted)
// TCP socket with the interface its handshake arrived on and, for sockets of
// the agent's network namespace, the source tag that interface was bound to
// at that moment, and count connections per (tag, VIP) in the kernel.
//
// The stamp is stored where each kind of consumer can find it:
//   ipng_by_cookie  LRU hash keyed by socket cookie (SO_COOKIE), deleted when
//                   the socket closes (`ipng-stats conns` lists it, the close
//                   callback finds the connection's series through it, and
//                   in-process servers look stamps up by SO_COOKIE);
//   ipng_sk         SK_STORAGE, looked up from user space by socket fd, freed
//                   with the socket. Written only when the load-time constant
//                   sk_enabled is set (the agent fronts servers itself with
//                   BPF attribution): creating socket storage is the most
//                   expensive step of a stamp (an allocation per socket).
//   ipng_by_tuple   LRU hash keyed by (netns cookie, 4-tuple), left behind when
//                   the socket closes so that consumers that learn of a
//                   connection late (an access log line) still find it.
//                   Written only when the load-time constant tuple_enabled is
//                   set (the nginx ingest is on).
//   ipng_tuple_ring the 64-bit hash of every key written to ipng_by_tuple, in
//                   stamping order (slot = sequence number & ring_mask, the
//                   sequence from ipng_tuple_head): a reader that misses a
//                   4-tuple in the LRU map knows exactly whether it was
//                   stamped among the last ring_mask + 1 stamps (then it was
//                   evicted) or not (never seen). Only with tuple_enabled.
// ipng_ifaces (written by the agent) maps (ifindex, family) to the tag id and
// device name of the binding; ipng_iface_slots (agent) holds the same for
// ifindexes below IPNG_IFACE_SLOTS / 2 at ifindex * 2 + (family == 6), an
// array lookup the verifier inlines, with the hash for larger ifindexes; ipng_tag_names (agent) names the tag ids, which
// stay stable across reloads and restarts because the map is pinned.
// ipng_series gives each (tag id, VIP) series of the agent's network
// namespace an index (allocated here from ipng_series_next on its first
// connection), ipng_conns (per-CPU array) counts connections opened and
// closed by that index, and the stamp keeps it, so that the close adds to
// the same series with an array lookup the verifier inlines. The agent reads
// both at scrape. Nothing wakes user space per connection.
// ipng_counters is a per-CPU array of the program's own counters.
//
// No vmlinux.h: the two kernel structs read through BTF are declared below
// with only the fields we use, and CO-RE relocates their offsets at load time.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "skops_addrs.h"

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
	IPNG_CNT_OTHER_NETNS,        // stamped sockets of other network namespaces (not counted per tag)
	IPNG_CNT_CONNS_FAILED,       // ipng_series full: a connection not counted per (tag, VIP)
	IPNG_CNT_UNTAGGED,           // stamped in the agent's namespace, ifindex not in ipng_ifaces
	IPNG_CNT_CLOSE_UNMATCHED,    // a stamped socket closed, its stamp gone (ipng_by_cookie too small): close not counted
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

// ipng_tuple_ring: one stamped 4-tuple.
struct ipng_ring_slot {
	__u64 hash;           // tuple_hash of the ipng_by_tuple key
	__u64 seq;            // 1 + the stamp's sequence number; 0: never written
};

struct ipng_stamp {
	struct ipng_tuple tuple;
	__u64 cookie;         // socket cookie
	__u64 stamped_ns;     // CLOCK_MONOTONIC (bpf_ktime_get_ns) at accept
	__u32 ifindex;        // ingress interface
	enum ipng_source source;
	__u8 family;          // IP version of the connection: 4 or 6 (v4-mapped is 4)
	__u8 bound;           // 1: a binding matched at accept; 0: default tag (or tag_id 0)
	__u16 series;         // index of the connection's series in ipng_conns; 0: not counted
	__u32 tag_id;         // tag at accept (ipng_tag_names); 0: not known at accept
	char device[16];      // interface name at accept; "" when tag_id is 0
};

#define IPNG_NAME_LEN 64

// ipng_ifaces: what the agent says about one (ifindex, family).
struct ipng_iface_key {
	__u32 ifindex;
	__u32 family;         // 4 or 6
};

struct ipng_iface {
	__u32 tag_id;
	__u32 bound;          // 1: a binding matched; 0: the default tag
	char device[16];
};

struct ipng_tag_name {
	char name[IPNG_NAME_LEN];
};

// ipng_series: one series of connection counts.
struct ipng_conn_key {
	__u8 vip[16];         // local address, IPv4 v4-mapped
	__u32 tag_id;         // 0: not known at accept, then ifindex says where
	__u32 ifindex;        // only when tag_id is 0
	__u8 family;
	__u8 bound;
	__u8 _pad[6];
};

struct ipng_conn_count {
	__u64 opened;
	__u64 closed;
};

// Set at load time. own_netns: the cookie of the network namespace whose
// interfaces ipng_ifaces describes (the agent's); sockets of other
// namespaces are stamped with tag_id 0 and counted only as other_netns.
volatile const __u64 own_netns = 0;
volatile const __u8 tuple_enabled = 1;
volatile const __u8 sk_enabled = 1;
// ipng_tuple_ring has ring_mask + 1 entries (a power of two).
volatile const __u32 ring_mask = 0;

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
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ipng_tuple_head SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ipng_ring_slot);
} ipng_tuple_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IPNG_CNT_MAX);
	__type(key, enum ipng_counter);
	__type(value, __u64);
} ipng_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ipng_iface_key);
	__type(value, struct ipng_iface);
} ipng_ifaces SEC(".maps");

// ipng_iface_slots: ipng_ifaces of ifindexes below IPNG_IFACE_SLOTS / 2 by
// ifindex * 2 + (family == 6); tag_id 0: not there.
#define IPNG_IFACE_SLOTS 8192

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, IPNG_IFACE_SLOTS);
	__type(key, __u32);
	__type(value, struct ipng_iface);
} ipng_iface_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct ipng_tag_name);
} ipng_tag_names SEC(".maps");

// Series indexes are 1 to IPNG_SERIES_MAX - 1 (0 in a stamp: not counted).
#define IPNG_SERIES_MAX 16384

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IPNG_SERIES_MAX);
	__type(key, struct ipng_conn_key);
	__type(value, __u32);
} ipng_series SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} ipng_series_next SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IPNG_SERIES_MAX);
	__type(key, __u32);
	__type(value, struct ipng_conn_count);
} ipng_conns SEC(".maps");

static __always_inline void count(enum ipng_counter idx)
{
	__u64 *v = bpf_map_lookup_elem(&ipng_counters, &idx);

	if (v)
		*v += 1;
}

// series_of returns the index of st's (tag, VIP) series, giving it the next
// free one on its first connection; 0 when ipng_series is full. A real
// (noinline) function, so that the key struct is described in the object's
// BTF for bpf2go -type.
static __noinline __u32 series_of(const struct ipng_stamp *st)
{
	struct ipng_conn_key key = {};
	__u32 zero = 0, idx, *v, *next;

	__builtin_memcpy(key.vip, st->tuple.local_addr, 16);
	key.tag_id = st->tag_id;
	key.ifindex = st->tag_id ? 0 : st->ifindex;
	key.family = st->family;
	key.bound = st->bound;
	v = bpf_map_lookup_elem(&ipng_series, &key);
	if (v)
		return *v;
	next = bpf_map_lookup_elem(&ipng_series_next, &zero);
	if (!next || *next >= IPNG_SERIES_MAX - 1)
		return 0;
	idx = __sync_fetch_and_add(next, 1) + 1;
	if (idx >= IPNG_SERIES_MAX)
		return 0;
	if (bpf_map_update_elem(&ipng_series, &key, &idx, BPF_NOEXIST) == 0)
		return idx;
	// Another CPU gave the series an index at the same time (idx stays
	// unused), or the map is full.
	v = bpf_map_lookup_elem(&ipng_series, &key);
	return v ? *v : 0;
}

// count_conn adds one opened or closed connection to series idx.
static __always_inline void count_conn(__u32 idx, int closing)
{
	struct ipng_conn_count *c = bpf_map_lookup_elem(&ipng_conns, &idx);

	if (!c)
		return;
	if (closing)
		c->closed += 1;
	else
		c->opened += 1;
}

// tuple_hash mixes the six 64-bit words of an ipng_by_tuple key
// (loader.TupleHash is the same function).
static __always_inline __u64 tuple_hash(const struct ipng_tuple *t)
{
	const __u64 *w = (const __u64 *)t;
	__u64 h = 0x9e3779b97f4a7c15ULL;

#pragma unroll
	for (int i = 0; i < sizeof(*t) / 8; i++) {
		h ^= w[i];
		h *= 0xbf58476d1ce4e5b9ULL;
		h ^= h >> 31;
	}
	return h;
}

// record_tuple appends the key just written to ipng_by_tuple to the ring.
static __noinline int record_tuple(const struct ipng_tuple *t)
{
	__u32 zero = 0, idx;
	__u64 *head = bpf_map_lookup_elem(&ipng_tuple_head, &zero);
	struct ipng_ring_slot *slot;
	__u64 seq;

	if (!head)
		return 0;
	seq = __sync_fetch_and_add(head, 1);
	idx = seq & ring_mask;
	slot = bpf_map_lookup_elem(&ipng_tuple_ring, &idx);
	if (!slot)
		return 0;
	slot->hash = tuple_hash(t);
	slot->seq = seq + 1;
	return 0;
}

// tag_at_accept copies the agent's binding of (ifindex, family) into st.
static __always_inline void tag_at_accept(struct ipng_stamp *st)
{
	struct ipng_iface_key key = { .ifindex = st->ifindex, .family = st->family };
	struct ipng_iface *ifc = 0;
	__u32 slot = st->ifindex * 2 + (st->family == 6);

	if (st->ifindex < IPNG_IFACE_SLOTS / 2)
		ifc = bpf_map_lookup_elem(&ipng_iface_slots, &slot);
	if (!ifc || !ifc->tag_id)
		ifc = bpf_map_lookup_elem(&ipng_ifaces, &key);
	if (!ifc) {
		count(IPNG_CNT_UNTAGGED);
		return;
	}
	st->tag_id = ifc->tag_id;
	st->bound = ifc->bound ? 1 : 0;
	__builtin_memcpy(st->device, ifc->device, sizeof(st->device));
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
	struct ipng_skops_addrs a;
	int own;

	ipng_read_addrs(skops, &a);
	st.ifindex = ingress_ifindex(skops, &st.source);
	if (!st.ifindex) {
		count(IPNG_CNT_NO_IFINDEX);
		return;
	}

	if (a.family == AF_INET6 && !is_v4mapped(a.l6)) {
		st.family = 6;
		__builtin_memcpy(st.tuple.local_addr, a.l6, 16);
		__builtin_memcpy(st.tuple.remote_addr, a.r6, 16);
	} else if (a.family == AF_INET6) {
		st.family = 4;
		__builtin_memcpy(st.tuple.local_addr, a.l6, 16);
		__builtin_memcpy(st.tuple.remote_addr, a.r6, 16);
	} else if (a.family == AF_INET) {
		st.family = 4;
		put_v4mapped(st.tuple.local_addr, a.l4);
		put_v4mapped(st.tuple.remote_addr, a.r4);
	} else {
		return;
	}
	st.tuple.local_port = a.lport;
	st.tuple.remote_port = bpf_ntohs(a.rport);
	st.tuple.netns_cookie = bpf_get_netns_cookie(skops);
	st.cookie = bpf_get_socket_cookie(skops);
	st.stamped_ns = bpf_ktime_get_ns();
	own = st.tuple.netns_cookie == own_netns;
	if (own) {
		tag_at_accept(&st);
		st.series = series_of(&st);
		if (st.series)
			count_conn(st.series, 0);
		else
			count(IPNG_CNT_CONNS_FAILED);
	}

	if (sk_enabled) {
		// Created with st as its value: nothing to copy afterwards.
		stored = skops->sk ? bpf_sk_storage_get(&ipng_sk, skops->sk, &st,
							BPF_SK_STORAGE_GET_F_CREATE) : 0;
		if (!stored)
			count(IPNG_CNT_STORAGE_FAILED);
	}
	if (bpf_map_update_elem(&ipng_by_cookie, &st.cookie, &st, BPF_ANY))
		count(IPNG_CNT_COOKIE_FAILED);
	if (tuple_enabled) {
		if (bpf_map_update_elem(&ipng_by_tuple, &st.tuple, &st, BPF_ANY))
			count(IPNG_CNT_TUPLE_FAILED);
		else
			record_tuple(&st.tuple);
	}

	// Ask for state changes so the cookie entry goes when the socket does.
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
					 BPF_SOCK_OPS_STATE_CB_FLAG);
	count(IPNG_CNT_STAMPED);
	if (!own)
		count(IPNG_CNT_OTHER_NETNS);
}

static __always_inline void closed(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct ipng_stamp *st;

	st = bpf_map_lookup_elem(&ipng_by_cookie, &cookie);
	if (!st && sk_enabled && skops->sk) // evicted from the cookie map
		st = bpf_sk_storage_get(&ipng_sk, skops->sk, 0, 0);
	if (!st) {
		count(IPNG_CNT_CLOSE_UNMATCHED);
		return;
	}
	// 0: not counted at accept (another namespace, ipng_series full, or
	// stamped by a version before the series indexes, whose counts went
	// with its map).
	if (st->series)
		count_conn(st->series, 1);
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
