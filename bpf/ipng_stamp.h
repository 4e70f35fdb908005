// SPDX-License-Identifier: GPL-2.0
//
// ipng_stamp.h: the stamp of one accepted socket and the 4-tuple key it is
// found by (sockops.c writes them; loader reads them through bpf2go's types
// and, for the nginx ingest, from the memory-mapped ring of stamps; include
// after <linux/bpf.h>).

#ifndef IPNG_STAMP_H
#define IPNG_STAMP_H

// Where a stamp's ifindex came from.
enum ipng_source {
	IPNG_SOURCE_SKB = 1,    // skb_iif of the skb that completed the handshake
	IPNG_SOURCE_RX_DST = 2, // the socket's cached input route (sk_rx_dst_ifindex)
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
	__u8 bound;           // 1: a binding matched at accept; 0: default tag (or tag_id 0)
	__u16 series;         // index of the connection's series in ipng_conns; 0: not counted
	__u32 tag_id;         // tag at accept (ipng_tag_names); 0: not known at accept
	char device[16];      // interface name at accept; "" when tag_id is 0
};

#endif
