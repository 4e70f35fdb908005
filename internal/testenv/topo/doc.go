// Package topo builds throw-away network topologies for privileged
// end-to-end tests of ipng-stats, and tears them down again.
//
// Every call to New creates six network namespaces named
// "ipngt-<rand>-<role>" (rand is 6 random hex digits, so parallel test
// binaries never collide) and wires them with veth, vxlan and macvlan
// devices only. Nothing is created in the root namespace, no address outside
// 10/8, fd00::/8 and the documentation ranges is used, and there is no
// default route anywhere, so no packet can leave the sandbox. t.Cleanup
// deletes every namespace, even when the test fails.
//
// Topology (srv is the server under test; both VIPs live on its lo):
//
//	                       srv: lo 192.0.2.10/32, 2001:db8:10::10/128 (VIPs)
//	                       +---------------------------------------------+
//	c1 eth0 10.1.0.2 ------| eth1 10.1.0.1      fd00:1::1/64             |
//	        fd00:1::2      |                                             |
//	c2 eth0 10.2.0.2 ------| eth2 10.2.0.1      fd00:2::1/64             |
//	        fd00:2::2      |                                             |
//	c4 eth0 10.4.0.2 ------| eth4 (no address) <- mv0 macvlan (bridge)   |
//	        fd00:4::2      |                      10.4.0.1, fd00:4::1    |
//	                       |                                             |
//	lb eth0 10.3.0.2 ------| eth3 10.3.0.1  fd00:3::1  (vxlan underlay)  |
//	   tun0 10.30.0.2 =====| tun0 10.30.0.1 fd00:30::1 (vxlan VNI 42,    |
//	        fd00:30::2     |                 udp/4789 over eth3)         |
//	   eth1 10.5.0.1       |                                             |
//	        fd00:5::1      | eth5 10.6.0.1  fd00:6::1                    |
//	          |            +------------------|--------------------------+
//	          |                               |
//	cl eth0 10.5.0.2, fd00:5::2     cl eth1 10.6.0.2, fd00:6::2
//
// c1, c2, c4 and cl route the VIPs via their own link; lb routes them into
// tun0. srv needs no return routes except for the DSR client, see below.
// The macvlan lower device eth4 carries no address, answers no ARP
// (arp_ignore=1) and has IPv6 disabled, so the kernel delivers c4's packets
// on mv0, which is what a listener's IP_PKTINFO reports.
//
// # DSR (direct server return)
//
// The client namespace cl (Topo.Client) plays a user behind a maglev:
//
//	cl --SYN--> lb --(vxlan tun0)--> srv (VIP on lo, ingress tun0)
//	cl <------------SYN-ACK------------ srv eth5 (route 10.5.0.0/24 via cl)
//
// cl routes the VIPs via lb (10.5.0.1), lb forwards them into tun0, and srv
// sees the connection arrive on tun0. srv routes cl's subnet 10.5.0.0/24
// (fd00:5::/64) via eth5 straight to cl (metric 100), so replies never go
// back through the tunnel. rp_filter is 0 everywhere, so srv accepts
// packets from 10.5.0.2 on tun0 and cl accepts replies from the VIP on eth1.
// IPv4 and IPv6 both work over this path.
//
// A maglev's tunnel is one-way. To model that, srv also has a worse
// (metric 1000) route to cl's subnet via tun0, used only by sockets bound to
// tun0 (SO_BINDTODEVICE: the SYN-ACK route lookup then has oif=tun0), and lb
// has a policy rule "iif tun0 to 10.5.0.0/24 blackhole" (and the IPv6
// equivalent), so whatever comes back out of the tunnel towards the client
// is dropped by lb. A listener bound to tun0 therefore sees the SYN but
// its SYN-ACK dies in lb, and the client's connect times out. This is the
// negative control for tests that check that ipng-stats does not break DSR.
//
// # Running commands and sockets inside a namespace
//
// NS.Do runs Go code on a thread that entered the namespace; Dial, DialFrom,
// Listen and ListenWith create sockets there (a socket keeps its namespace,
// so it can be used from any goroutine afterwards). NS.Exec runs a program
// via "nsenter --net", which switches only the network namespace: unlike
// "ip netns exec" it does not remount /sys, so /sys/fs/bpf pins stay visible.
//
// NewCgroup makes a throw-away child of the cgroup2 mount for attaching
// sock_ops programs; Cgroup.Start starts a command directly inside it
// (clone3 CLONE_INTO_CGROUP).
//
// NS and Cgroup are internal/testenv's: a package whose tests cannot import
// topo (it imports loader) uses testenv.NewNS and testenv.NewCgroup.
//
// Leftovers of a killed test binary (no cleanup ran) can be removed with
//
//	ip netns | awk '/^ipng[tb]-/{print $1}' | xargs -rn1 ip netns del
//	rmdir /sys/fs/cgroup/unified/ipngt-* # or wherever cgroup2 is mounted
package topo
