package exporter

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/collector"
)

// TestConcurrentRecordAndScrape records from several goroutines while
// others scrape every format through a real listener; run under -race.
func TestConcurrentRecordAndScrape(t *testing.T) {
	c := newTestCollector(t, collector.Config{MaxSeries: 20})
	s, err := New(Options{Collector: c})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s, "http")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx) }()

	const writers, perWriter = 4, 3000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				vip := netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 30)}) // 30 VIPs, cap 20: overflow too
				sr := c.Series("tag"+strconv.Itoa(w%2), vip)
				sr.ConnOpened()
				sr.Record(collector.Outcome{Status: 200 + i%400, RequestBytes: uint64(i), ResponseBytes: uint64(i), Duration: time.Duration(i)})
				sr.ConnClosed()
			}
		})
	}
	done := make(chan struct{})
	var scrapers sync.WaitGroup
	queries := []struct{ query, accept string }{
		{"", ""},
		{"format=json", ""},
		{"format=openmetrics&source_tag=tag1", ""},
		{"vip=192.0.2.1&vip=other", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"},
	}
	for _, q := range queries {
		scrapers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, base+"/metrics?"+q.query, nil)
				if q.accept != "" {
					req.Header.Set("Accept", q.accept)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_ = body(t, resp)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("%s: status %d", q.query, resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	scrapers.Wait()

	resp, err := http.Get(base + "/metrics?format=json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	d := decodeDoc(t, resp)
	var total uint64
	for _, sr := range d.Series {
		for _, cs := range sr.Codes {
			total += cs.Requests
		}
		if sr.Connections == nil || sr.Connections.Active != 0 {
			t.Errorf("%s/%s connections = %+v", sr.SourceTag, sr.VIP, sr.Connections)
		}
	}
	if total != writers*perWriter {
		t.Errorf("JSON counts %d requests, want %d", total, writers*perWriter)
	}
	if d.Meta.Series != 20 || d.Meta.SeriesOverflow == 0 {
		t.Errorf("series %d overflow %d, want 20 and > 0", d.Meta.Series, d.Meta.SeriesOverflow)
	}
}
