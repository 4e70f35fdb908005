package httpstats_test

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/httpstats"
)

// Example: a net/http server whose requests are counted per (source_tag,
// vip, code). Serve coll with exporter.New to expose them on :9113.
func Example() {
	ctx := context.Background()
	tags := bindings.NewResolver(bindings.Spec{DefaultTag: "direct",
		Bindings: []bindings.Binding{{Device: "lo", Tag: "loopback"}}}, nil)
	tags.SetLinks([]bindings.Link{{Index: 1, Name: "lo"}}) // the agent uses tags.Scan/Run
	attr, _ := attribution.New(attribution.Options{Mode: attribution.ModeFallback, Bindings: tags})
	coll, _ := collector.New(collector.Config{}, collector.Options{})

	stats := httpstats.New(httpstats.Options{Collector: coll})
	ln, err := stats.Listen(ctx, "tcp", "127.0.0.1:0", attr) // attribution once per connection
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})}
	stats.Instrument(srv) // one outcome per request
	go srv.Serve(ln)
	defer srv.Close()

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	waitRecorded(coll, 1) // recorded when the response has been flushed
	for _, s := range coll.Snapshot(collector.Filter{}).Series {
		for _, c := range s.Codes {
			fmt.Println(s.SourceTag, s.VIP, c.Code, c.Requests)
		}
	}
	// Output: loopback 127.0.0.1 2xx 1
}
