package testenv

import (
	"maps"
	"testing"
)

func TestSamples(t *testing.T) {
	text := `# HELP ipng_requests_total Requests.
# TYPE ipng_requests_total counter
ipng_requests_total{source_tag="maglev1",vip="192.0.2.10",code="2xx"} 7
ipng_requests_total{source_tag="maglev1",vip="192.0.2.10",code="5xx"} 1
ipng_requests_total{code="2xx",source_tag="direct",vip="2001:db8::10"} 3 1700000000000
ipng_requests_total_created{source_tag="maglev1",vip="192.0.2.10",code="2xx"} 1.7e9
ipng_proxy_upstream_up{server="10.0.0.1:80",odd="a \"quoted\", b}"} 1
ipng_proxy_upstream_up{server="10.0.0.2:80"} 0
ipng_up 1
broken{x="y 2
`
	want := map[string]float64{"maglev1 192.0.2.10 2xx": 7, "maglev1 192.0.2.10 5xx": 1, "direct 2001:db8::10 2xx": 3}
	if got := Samples(text, "ipng_requests_total", "source_tag", "vip", "code"); !maps.Equal(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
	if got := Samples(text, "ipng_requests_total", "source_tag"); !maps.Equal(got, map[string]float64{"maglev1": 8, "direct": 3}) {
		t.Errorf("requests by tag = %v, want sums", got)
	}
	if got := Samples(text, "ipng_proxy_upstream_up", "server"); !maps.Equal(got, map[string]float64{"10.0.0.1:80": 1, "10.0.0.2:80": 0}) {
		t.Errorf("upstream up = %v", got)
	}
	if got := Samples(text, "ipng_up"); !maps.Equal(got, map[string]float64{"": 1}) {
		t.Errorf("unlabelled = %v", got)
	}
	if got := Samples(text, "broken", "x"); len(got) != 0 {
		t.Errorf("unparsable line = %v", got)
	}
}
