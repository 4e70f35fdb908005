//go:build pending_tls_proxy

package tests

import "testing"

// What the proxy's TLS listeners do not do yet (found by issue 14's hostile
// TLS tests; proxy/ is being rewritten for issue 16). Run with
//
//	IPNG_STATS_E2E=1 go test -tags pending_tls_proxy ./tests/ -run 'TLSPending'
//
// and drop the build tag (and the pending switch) once they pass:
//
//   - a malformed request (400), oversized headers (431) and a slowloris on
//     the headers after the handshake are answered by net/http without
//     calling the proxy: none is counted under the client's tag, and the
//     slowloris is closed at read_header without the 408 plain HTTP gets;
//   - a connection that never completes its handshake (no ClientHello, a
//     stalled one, plain HTTP to the TLS port) is closed but not counted in
//     ipng_proxy_connections_idle_closed_total;
//   - a connection that completed its handshake and sends nothing has sent
//     bytes (the ClientHello), so proxy.max_connections cannot evict it: 64
//     such connections make every new one over_limit (refused, connection
//     reset) until read_header closes them, legitimate clients included.

func TestProxyHostileRequestsTLSPending(t *testing.T) { proxyHostileTLS(t, true) }

func TestProxyTenThousandIdleConnectionsTLSPending(t *testing.T) { proxyTenThousandTLS(t, true) }
