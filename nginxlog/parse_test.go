package nginxlog

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// line builds a log line in the shipped format with the given overrides
// (key → raw JSON value, "" removes the key).
func line(over map[string]string) string {
	vals := map[string]string{
		"server_addr": `"192.0.2.10"`, "server_port": `"80"`, "remote_addr": `"198.51.100.7"`,
		"remote_port": `"40000"`, "status": `"200"`, "request_length": `"75"`, "bytes_sent": `"250"`,
		"request_time": `"0.012"`, "connection_time": `"1.500"`, "msec": `"1700000000.123"`,
		"connection": `"7"`, "connection_requests": `"1"`, "host": `"www.example.com"`,
		"request_method": `"GET"`, "request_uri": `"/a\"b\\c\u0001"`, "http_user_agent": `"wrk"`,
	}
	for k, v := range over {
		vals[k] = v
	}
	var b strings.Builder
	b.WriteByte('{')
	for _, k := range append(fieldOrder(), "connection_requests", "request_method", "request_uri", "http_user_agent") {
		if v := vals[k]; v != "" {
			if b.Len() > 1 {
				b.WriteByte(',')
			}
			b.WriteString(`"` + k + `":` + v)
		}
	}
	b.WriteByte('}')
	return b.String()
}

func TestParse(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name   string
		in     string
		want   Problem
		local  netip.AddrPort
		remote netip.AddrPort
		status int
	}{
		{"ipv4", line(nil), OK, ap("192.0.2.10:80"), ap("198.51.100.7:40000"), 200},
		{"ipv6", line(map[string]string{"server_addr": `"2001:db8:10::10"`, "remote_addr": `"2001:db8:1::2"`}), OK,
			ap("[2001:db8:10::10]:80"), ap("[2001:db8:1::2]:40000"), 200},
		{"v4-mapped", line(map[string]string{"server_addr": `"::ffff:192.0.2.10"`, "remote_addr": `"::ffff:198.51.100.7"`}), OK,
			ap("[::ffff:192.0.2.10]:80"), ap("[::ffff:198.51.100.7]:40000"), 200},
		{"unquoted numbers", line(map[string]string{"status": `404`, "server_port": `8080`}), OK,
			ap("192.0.2.10:8080"), ap("198.51.100.7:40000"), 404},
		{"spaces", ` { "server_addr" : "192.0.2.10" , "server_port":"80","remote_addr":"198.51.100.7","remote_port":"1","status":"503","request_length":"1","bytes_sent":"2","request_time":"0"} `, OK,
			ap("192.0.2.10:80"), ap("198.51.100.7:1"), 503},
		{"no optional keys", `{"server_addr":"192.0.2.10","server_port":"80","remote_addr":"198.51.100.7","remote_port":"1","status":"301","request_length":"1","bytes_sent":"2","request_time":"0.000"}`, OK,
			ap("192.0.2.10:80"), ap("198.51.100.7:1"), 301},
		{"unknown keys skipped", `{"x":"y","server_addr":"192.0.2.10","z":1.5e3,"server_port":"80","remote_addr":"198.51.100.7","remote_port":"1","status":"200","request_length":"1","bytes_sent":"2","request_time":"0.001"}`, OK,
			ap("192.0.2.10:80"), ap("198.51.100.7:1"), 200},
		{"empty", ``, Malformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"not json", `192.0.2.10 - - [22/Nov/2026] "GET / HTTP/1.1" 200`, Malformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"empty object", `{}`, MissingField, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"truncated", line(nil)[:60], Malformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"trailing garbage", line(nil) + "x", Malformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"two objects", line(nil) + line(nil), Malformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"nested", line(map[string]string{"host": `{"a":1}`}), Malformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"control char tolerated", line(map[string]string{"host": "\"a\x01b\""}), OK, ap("192.0.2.10:80"), ap("198.51.100.7:40000"), 200},
		{"duplicate key", strings.Replace(line(nil), `"status":"200"`, `"status":"200","status":"500"`, 1), Malformed, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"missing status", line(map[string]string{"status": ""}), MissingField, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"missing remote port", line(map[string]string{"remote_port": ""}), MissingField, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"unix socket peer", line(map[string]string{"remote_addr": `"unix:"`, "remote_port": `""`}), BadAddress, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"bad address", line(map[string]string{"server_addr": `"300.1.1.1"`}), BadAddress, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"zone", line(map[string]string{"server_addr": `"fe80::1%eth0"`}), BadAddress, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"port too big", line(map[string]string{"server_port": `"65536"`}), BadAddress, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"negative port", line(map[string]string{"remote_port": `"-1"`}), BadAddress, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"bad status", line(map[string]string{"status": `"2oo"`}), BadNumber, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"status too big", line(map[string]string{"status": `"1000"`}), BadNumber, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"bad time", line(map[string]string{"request_time": `"1.2.3"`}), BadNumber, netip.AddrPort{}, netip.AddrPort{}, 0},
		{"dash length", line(map[string]string{"request_length": `"-"`}), BadNumber, netip.AddrPort{}, netip.AddrPort{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Record
			if got := Parse([]byte(tt.in), &r); got != tt.want {
				t.Fatalf("Parse(%q) = %v (%s), want %v (%s)", tt.in, got, got.Reason(), tt.want, tt.want.Reason())
			}
			if tt.want != OK {
				return
			}
			if r.Local != tt.local || r.Remote != tt.remote || r.Status != tt.status {
				t.Errorf("got local %v remote %v status %d, want %v %v %d", r.Local, r.Remote, r.Status, tt.local, tt.remote, tt.status)
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	var r Record
	if p := Parse([]byte(line(nil)), &r); p != OK {
		t.Fatal(p.Reason())
	}
	want := Record{
		Local: netip.MustParseAddrPort("192.0.2.10:80"), Remote: netip.MustParseAddrPort("198.51.100.7:40000"),
		Status: 200, RequestBytes: 75, ResponseBytes: 250, RequestTime: 12 * time.Millisecond,
		ConnTime: 1500 * time.Millisecond, Msec: 1700000000123, Conn: 7,
	}
	if string(r.Host) != "www.example.com" {
		t.Errorf("host %q", r.Host)
	}
	r.Host = nil
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
}

func TestRecover(t *testing.T) {
	whole := line(nil)
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"torn then whole", whole[:70] + whole, 70},
		{"two torn then whole", whole[:10] + whole[:50] + whole, 60},
		{"torn only", whole[:70], 0},
		{"garbage then whole", "xx" + whole, 2},
		{"whole then torn", whole + whole[:40], 0},
		{"escaped brace-quote is no start", strings.Replace(whole, `"www.example.com"`, `"{\"a"`, 1)[:200], 0},
	}
	for _, tt := range tests {
		var r Record
		if got := Recover([]byte(tt.in), &r); got != tt.want {
			t.Errorf("%s: Recover = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestParseSeconds(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true}, {"0.000", 0, true}, {"1.5", 1500 * time.Millisecond, true},
		{"12.000123456", 12*time.Second + 123456, true}, {"1.", 0, false}, {".5", 0, false},
		{"1.0000000001", 0, false}, {"", 0, false}, {"-1", 0, false}, {"99999999999999", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseSeconds([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseSeconds(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseAllocs(t *testing.T) {
	lines := [][]byte{[]byte(line(nil)), []byte(line(map[string]string{"server_addr": `"2001:db8:10::10"`, "remote_addr": `"::ffff:1.2.3.4"`})),
		[]byte(line(map[string]string{"status": `"x"`}))}
	var r Record
	for _, l := range lines {
		if n := testing.AllocsPerRun(100, func() { Parse(l, &r) }); n != 0 {
			t.Errorf("Parse(%q) allocates %v times", l, n)
		}
	}
}

// FuzzParse: Parse answers exactly as the generic parser it replaced
// (refParse), accepts only valid records, and Recover finds only lines that
// parse.
func FuzzParse(f *testing.F) {
	f.Add(line(nil))
	f.Add(line(map[string]string{"server_addr": `"2001:db8:10::10"`}))
	f.Add(line(map[string]string{"remote_addr": `"01.2.3.4"`}))
	f.Add(line(map[string]string{"remote_addr": `"1.2.3.256"`, "status": `"200" `}))
	f.Add(line(map[string]string{"host": `"a\"b"`, "request_uri": `"/` + strings.Repeat("x", 40) + `\"y"`}))
	f.Add(`{"status":"200"}`)
	f.Add(`{"a":"\\\"","b":1e5}`)
	f.Add(`{ "remote_port" : "1", "server_addr":"::1","server_port":"80","remote_addr":"1.2.3.4","status":"200","request_length":"1","bytes_sent":"2","request_time":"0.1","status":"201"}`)
	f.Fuzz(func(t *testing.T, s string) {
		var r, want Record
		p := Parse([]byte(s), &r)
		if p >= numProblems {
			t.Fatalf("problem %d out of range", p)
		}
		wp := refParse([]byte(s), &want)
		if p != wp || (p == OK && !sameRecord(&r, &want)) {
			t.Fatalf("Parse(%q) = %v %+v, the generic parser %v %+v", s, p, r, wp, want)
		}
		if p == OK && (!r.Local.IsValid() || !r.Remote.IsValid() || r.Status > 999 || r.RequestTime < 0) {
			t.Fatalf("accepted %q with invalid record %+v", s, r)
		}
		if i := Recover([]byte(s), &r); i < 0 || i >= len(s)+1 || (i > 0 && Parse([]byte(s[i:]), &r) != OK) {
			t.Fatalf("Recover(%q) = %d", s, i)
		}
	})
}

func sameRecord(a, b *Record) bool {
	x, y := *a, *b
	x.Host, y.Host = nil, nil // nil and empty are the same
	return reflect.DeepEqual(x, y) && string(a.Host) == string(b.Host)
}

// TestParseSameAsGeneric: on the test lines (every key reordered, removed
// or given odd values), Parse answers as the generic parser.
func TestParseSameAsGeneric(t *testing.T) {
	var lines []string
	keys := append(fieldOrder(), "connection_requests", "request_method", "request_uri", "http_user_agent")
	odd := []string{``, `""`, `"x"`, `"01"`, `"1.2.3.4"`, `"::ffff:1.2.3.4"`, `"0.0.0.0"`, `"255.255.255.255"`, `"1.2.3"`,
		`"1..2.3"`, `"1.2.3.4."`, `"256.1.1.1"`, `"65536"`, `"1.5"`, `"1e3"`, `12`, `"\"x"`, `"a\\"`, `"fe80::1%eth0"`}
	for _, k := range keys {
		for _, v := range odd {
			lines = append(lines, line(map[string]string{k: v}))
		}
	}
	// The snippet's keys in reverse order.
	var b strings.Builder
	b.WriteByte('{')
	for i := len(keys) - 1; i >= 0; i-- {
		v := map[string]string{"server_addr": `"192.0.2.10"`, "remote_addr": `"198.51.100.7"`, "request_time": `"0.1"`,
			"connection_time": `"0.1"`, "msec": `"1.5"`, "host": `"h"`}[keys[i]]
		if v == "" {
			v = `"80"`
		}
		fmt := `"` + keys[i] + `":` + v
		if i < len(keys)-1 {
			b.WriteByte(',')
		}
		b.WriteString(fmt)
	}
	b.WriteByte('}')
	lines = append(lines, b.String())
	for _, l := range lines {
		var r, want Record
		p, wp := Parse([]byte(l), &r), refParse([]byte(l), &want)
		if p != wp || (p == OK && !sameRecord(&r, &want)) {
			t.Errorf("Parse(%q) = %v %+v, the generic parser %v %+v", l, p, r, wp, want)
		}
	}
	if p := Parse([]byte(b.String()), new(Record)); p != OK {
		t.Errorf("the snippet's keys in reverse order: %v", p)
	}
	for i, k := range fieldOrder() {
		if fieldOf([]byte(k)) != field(i+1) {
			t.Errorf("fieldOf(%q) = %d, want %d (the snippet's order)", k, fieldOf([]byte(k)), i+1)
		}
	}
}
