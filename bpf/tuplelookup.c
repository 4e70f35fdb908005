//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// ipng-stats 4-tuple batch lookup: looks up many keys of ipng_by_tuple (the
// sock_ops program's map, see sockops.c) in one bpf(2) call.
//
// The nginx ingest needs the stamp of every log line's 4-tuple. One
// BPF_MAP_LOOKUP_ELEM per line is a system call per new connection, the
// largest part of the agent's cost per line. Instead the agent writes up to
// IPNG_LOOKUP_BATCH keys into ipng_lookup_io, an array it has memory-mapped
// (BPF_F_MMAPABLE: no system call to fill it or to read the results), and
// runs this program once with BPF_PROG_TEST_RUN; the program looks each key
// up in the kernel and copies the stamps back into the same array.
//
// A syscall program runs only when user space asks (BPF_PROG_TEST_RUN); it
// is attached to nothing and costs the host's servers nothing.
//
// ipng_by_tuple is replaced at load time by the agent's map (the layouts
// below are sockops.c's; loader tests compare them).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "GPL";

#define IPNG_LOOKUP_BATCH 256

struct ipng_tuple {
	__u64 netns_cookie;
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
	__u32 _pad;
};

struct ipng_stamp {
	struct ipng_tuple tuple;
	__u64 cookie;
	__u64 stamped_ns;
	__u32 ifindex;
	__u32 source;
	__u8 family;
	__u8 bound;
	__u8 _pad[2];
	__u32 tag_id;
	char device[16];
};

// One key and, after the run, its stamp.
struct ipng_lookup_slot {
	struct ipng_tuple key;    // written by the agent
	struct ipng_stamp stamp;  // written by the program when found
	__u32 found;              // 1: stamp is the key's; 0: not in the map
	__u32 _pad;
};

struct ipng_lookup_batch {
	__u32 n;                  // keys in slot[0..n), written by the agent
	__u32 found;              // how many were found, written by the program
	struct ipng_lookup_slot slot[IPNG_LOOKUP_BATCH];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);   // replaced by the agent's map
	__type(key, struct ipng_tuple);
	__type(value, struct ipng_stamp);
} ipng_by_tuple SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ipng_lookup_batch);
} ipng_lookup_io SEC(".maps");

struct loop_ctx {
	struct ipng_lookup_batch *b;
	__u32 found;
};

static long lookup_one(__u32 i, struct loop_ctx *lc)
{
	struct ipng_lookup_slot *s;
	struct ipng_stamp *st;

	if (i >= IPNG_LOOKUP_BATCH)
		return 1;
	s = &lc->b->slot[i];
	st = bpf_map_lookup_elem(&ipng_by_tuple, &s->key);
	if (!st) {
		s->found = 0;
		return 0;
	}
	__builtin_memcpy(&s->stamp, st, sizeof(*st));
	s->found = 1;
	lc->found++;
	return 0;
}

SEC("syscall")
int ipng_lookup_tuples(void *ctx)
{
	__u32 zero = 0, n;
	struct loop_ctx lc = {};

	lc.b = bpf_map_lookup_elem(&ipng_lookup_io, &zero);
	if (!lc.b)
		return 0;
	n = lc.b->n;
	if (n > IPNG_LOOKUP_BATCH)
		n = IPNG_LOOKUP_BATCH;
	bpf_loop(n, lookup_one, &lc, 0);
	lc.b->found = lc.found;
	return lc.found;
}
