package exporter

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzQuery feeds arbitrary query strings to the stats handler: it must
// never panic and always answer 200 or 400.
func FuzzQuery(f *testing.F) {
	for _, seed := range []string{
		"", "format=json", "format=text&source_tag=maglev1", "vip=192.0.2.10&vip=other",
		"source_tag=a&source_tag=b&format=openmetrics", "vip=%zz", "a=1;b=2", "format=json&format=json",
		"vip=::ffff:1.2.3.4", "vip=fe80::1%25lo", "source_tag=%00", "=&&=", "format",
	} {
		f.Add(seed, "")
		f.Add(seed, "application/json")
	}
	s := newTestServer(f, nil)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, raw, accept string) {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.URL.RawQuery = raw
		req.Header.Set("Accept", accept)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("query %q accept %q: status %d: %s", raw, accept, rec.Code, rec.Body.String())
		}
	})
}
