// SPDX-License-Identifier: GPL-2.0
//
// skops_addrs.h: the addresses and ports of a sock_ops context, read once
// (shared by sockops.c and handshake.c; include after <linux/bpf.h>).

#ifndef IPNG_SKOPS_ADDRS_H
#define IPNG_SKOPS_ADDRS_H

struct ipng_skops_addrs {
	__u32 family;   // AF_INET or AF_INET6 (the socket's)
	__u32 l4, r4;   // IPv4 addresses, network byte order (AF_INET)
	__u32 l6[4];    // IPv6 addresses, network byte order (AF_INET6;
	__u32 r6[4];    // IPv4 connections of dual-stack sockets v4-mapped)
	__u32 lport;    // host byte order
	__u32 rport;    // network byte order, in the low 16 bits
};

// ipng_read_addrs reads every address field of the context before the
// caller branches on the family: clang may otherwise merge the v4 and v6
// loads into one variable-offset ctx access, which the verifier rejects.
static __always_inline void ipng_read_addrs(const struct bpf_sock_ops *skops, struct ipng_skops_addrs *a)
{
	a->family = skops->family;
	a->l4 = skops->local_ip4;
	a->r4 = skops->remote_ip4;
	a->l6[0] = skops->local_ip6[0];
	a->l6[1] = skops->local_ip6[1];
	a->l6[2] = skops->local_ip6[2];
	a->l6[3] = skops->local_ip6[3];
	a->r6[0] = skops->remote_ip6[0];
	a->r6[1] = skops->remote_ip6[1];
	a->r6[2] = skops->remote_ip6[2];
	a->r6[3] = skops->remote_ip6[3];
	a->lport = skops->local_port;
	a->rport = skops->remote_port >> 16;
}

#endif
