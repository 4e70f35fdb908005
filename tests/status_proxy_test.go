package tests

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestProxyStatusPage: `ipng-stats proxy` serves the status page too, with
// its own health (component proxy, IP_PKTINFO) and the requests it proxied.
func TestProxyStatusPage(t *testing.T) {
	e := newProxyEnv(t, proxyYAML)
	c := proxyClient(e.topo.C1)
	for range 2 {
		resp, err := c.Get(e.url("ipv4", e.port, "/status/200"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	e.waitCounts(map[string]uint64{"tag1 " + e.topo.VIP4.String() + " 2xx": 2})
	resp, err := proxyClient(e.topo.Srv).Get(fmt.Sprintf("http://127.0.0.1:%d/status/", e.web))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	page := string(b)
	for _, want := range []string{
		"<dt>component</dt><dd>proxy</dd>", "<dt>attribution</dt><dd>fallback (pktinfo)</dd>",
		`<tr data-tag="tag1" data-vip="192.0.2.10">`, `<td class="num req">2</td>`,
		`<th scope="row">eth1</th><td>any</td><td>tag1</td>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("proxy's status page lacks %s", want)
		}
	}
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
}
