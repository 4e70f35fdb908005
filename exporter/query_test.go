package exporter

import (
	"net/http"
	"strings"
	"testing"
)

func TestQueryErrors(t *testing.T) {
	h := newTestServer(t, nil).Handler()
	tests := []struct {
		name, query, want string
	}{
		{"unknown", "foo=1", `unknown query parameter "foo"`},
		{"unknown two", "b=1&a=2&format=json", `unknown query parameters "a", "b"`},
		{"typo", "sourcetag=x", `"sourcetag"`},
		{"bad format", "format=xml", `invalid value "xml" for query parameter "format"`},
		{"empty format", "format=", `invalid value "" for query parameter "format"`},
		{"format twice", "format=json&format=text", `"format" given 2 times`},
		{"bad tag", "source_tag=a%20b", `invalid value "a b" for query parameter "source_tag"`},
		{"empty tag", "source_tag=", `invalid value "" for query parameter "source_tag"`},
		{"long tag", "source_tag=" + strings.Repeat("a", 64), `query parameter "source_tag"`},
		{"bad vip", "vip=300.1.1.1", `invalid value "300.1.1.1" for query parameter "vip"`},
		{"vip with zone", "vip=fe80::1%25eth0", `query parameter "vip"`},
		{"vip hostname", "vip=example.com", `query parameter "vip"`},
		{"vip cidr", "vip=192.0.2.0/24", `query parameter "vip"`},
		{"bad escape", "vip=%zz", "invalid query string"},
		{"semicolon", "a=1;b=2", "invalid query string"},
		{"too many", strings.Repeat("vip=192.0.2.1&", 65), "more than 64 values"},
		{"too long", "source_tag=" + strings.Repeat("a", 9000), "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/metrics", "/.well-known/ipng/statsz"} {
				resp := get(t, h, path+"?"+tc.query)
				b := string(body(t, resp))
				if resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, tc.want) {
					t.Errorf("%s?%s: status %d body %q, want 400 containing %q", path, tc.query, resp.StatusCode, b, tc.want)
				}
			}
		})
	}
}

func TestQueryValid(t *testing.T) {
	tests := []struct {
		query    string
		format   string
		tags     []string
		vips     []string
		wantJSON bool
	}{
		{"", "", nil, nil, false},
		{"format=json", "json", nil, nil, true},
		{"format=prometheus&source_tag=maglev1", "prometheus", []string{"maglev1"}, nil, false},
		{"vip=::ffff:10.0.0.1&vip=2001:DB8::1&vip=other", "", nil, []string{"10.0.0.1", "2001:db8::1", "other"}, false},
		{"source_tag=a.b:c-d_e&source_tag=Z9", "", []string{"a.b:c-d_e", "Z9"}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			q, err := parseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if q.format != tc.format || strings.Join(q.filter.SourceTags, ",") != strings.Join(tc.tags, ",") ||
				strings.Join(q.filter.VIPs, ",") != strings.Join(tc.vips, ",") {
				t.Errorf("got %+v", q)
			}
			if wantJSON(q, http.Header{}) != tc.wantJSON {
				t.Errorf("wantJSON = %v", !tc.wantJSON)
			}
		})
	}
}
