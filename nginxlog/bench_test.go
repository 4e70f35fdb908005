package nginxlog

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
)

// benchLines are realistic lines of the shipped log_format from 64 clients,
// all stamped in the fixture's map.
// With newConns every line is a request on a new connection (no connection
// serial, so every line costs a map lookup); otherwise 64 kept-alive
// connections.
func benchLines(b *testing.B, f *fixture, newConns bool) [][]byte {
	var out [][]byte
	for i := range 64 {
		remote := fmt.Sprintf("198.51.100.%d:%d", i+1, 40000+i)
		if f.maps != nil {
			f.stamp(b, "192.0.2.10:80", remote, 7, 4)
		}
		out = append(out, []byte(line(map[string]string{
			"remote_addr": fmt.Sprintf(`"198.51.100.%d"`, i+1), "remote_port": fmt.Sprintf(`"%d"`, 40000+i),
			"status":      fmt.Sprintf(`"%d"`, []int{200, 301, 404, 503}[i%4]),
			"connection":  map[bool]string{false: fmt.Sprintf(`"%d"`, 1000+i), true: `""`}[newConns],
			"request_uri": `"/some/path/index.html?q=1"`, "http_user_agent": `"Mozilla/5.0 (X11; Linux x86_64)"`,
		})))
	}
	return out
}

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time since start per op as
// cpu-ns/op: on a machine shared with other work it moves much less than
// the wall time of ns/op (which includes waiting for a CPU).
func reportCPU(b *testing.B, start time.Duration, ops int) {
	if ops > 0 {
		b.ReportMetric(float64(cpuTime()-start)/float64(ops), "cpu-ns/op")
	}
}

func BenchmarkParse(b *testing.B) {
	l := []byte(line(nil))
	var r Record
	b.SetBytes(int64(len(l)))
	b.ReportAllocs()
	c0 := cpuTime()
	for b.Loop() {
		Parse(l, &r)
	}
	reportCPU(b, c0, b.N)
}

// BenchmarkLine is the per-line hot path: parse, BPF map lookup, bindings,
// series handle cache, collector record.
func BenchmarkLine(b *testing.B) {
	for _, tc := range []struct {
		name          string
		bpf, newConns bool
	}{{"bpf/keepalive", true, false}, {"bpf/new-conns", true, true}, {"no-bpf", false, false}} {
		b.Run(tc.name, func(b *testing.B) {
			bpf := tc.bpf
			f := newFixture(b, bpf)
			lines := benchLines(b, f, tc.newConns)
			in := f.ingest(b, config.NginxConfig{})
			b.ReportAllocs()
			i := 0
			c0 := cpuTime()
			for b.Loop() {
				in.line(lines[i%len(lines)])
				i++
			}
			in.flush()
			reportCPU(b, c0, b.N)
			if s := in.Stats(); s.Rejected != 0 || (bpf && s.TupleMisses != 0) {
				b.Fatalf("stats %+v", s)
			}
		})
	}
}

// BenchmarkSpool reads lines from a spool file (tmpfs when /dev/shm is one)
// and handles them: what the agent does per line, the file read included.
func BenchmarkSpool(b *testing.B) {
	f := newFixture(b, true)
	lines := benchLines(b, f, false)
	var chunk strings.Builder
	for chunk.Len() < 1<<20 {
		for _, l := range lines {
			chunk.Write(l)
			chunk.WriteByte('\n')
		}
	}
	data := []byte(chunk.String())
	perChunk := strings.Count(chunk.String(), "\n")
	dir := "/dev/shm"
	if !onTmpfs(dir) {
		dir = b.TempDir()
	}
	d, err := os.MkdirTemp(dir, "nginxlog-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(d)
	f.path = d + "/access.log"
	in := f.ingest(b, config.NginxConfig{})
	w, err := os.OpenFile(f.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	b.ReportAllocs()
	b.ResetTimer()
	total := 0
	c0, written := cpuTime(), time.Duration(0)
	for total < b.N {
		b.StopTimer()
		c := cpuTime()
		w.Write(data)
		written += cpuTime() - c
		b.StartTimer()
		for {
			n, err := in.sp.poll()
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				break
			}
		}
		total += perChunk
	}
	b.StopTimer()
	in.sp.close()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/line")
	reportCPU(b, c0+written, total) // the writes are nginx's part
	if got := in.Stats().Lines; got != uint64(total) {
		b.Fatalf("read %d lines, wrote %d", got, total)
	}
}
