// Package httpstats gives any net/http server the per (source_tag, vip,
// code) accounting of ipng-stats: wrap the listener (attribution once per
// connection, at accept) and instrument the http.Server (one outcome per
// request, connection and in-flight gauges), and serve the Collector with
// package exporter. Package ipngstats does all of that wiring from a
// configuration file; use httpstats directly to assemble the parts yourself.
//
//	ln, _ := stats.Listen(ctx, "tcp", ":8080", attributor) // attributed, counting listener
//	stats.Instrument(srv); srv.Serve(ln)                   // outcomes recorded into the collector
//
// What is recorded, per request:
//
//   - HTTP/1.x: request bytes are the bytes read from the connection (request
//     line, headers and body, as received; TLS records included on a TLS
//     listener), response bytes the bytes written to it, duration runs from
//     the first byte of the request to the moment the response has been
//     flushed. On cleartext listeners, requests the server rejects on its
//     own (bad request line, 431 on oversized headers, header read
//     timeouts, clients that give up mid-request) are recorded too, with
//     the status the server sent, 408 for a timeout, or 400; on TLS
//     listeners they are not (net/http gives no hook to see them).
//   - HTTP/2: request bytes are the header fields (RFC 7541 size: name,
//     value and 32 per field) plus the body read; response bytes likewise;
//     duration runs from the handler's start to its return.
//
// It owns only the glue between net/http and a collector.Series: it does not
// resolve interfaces (package attribution), keep counters (package collector)
// or serve metrics (package exporter), and it must not touch the server's
// Handler semantics: responses pass through unchanged.
package httpstats
