package httpstats

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/collector"
)

// DefaultTag is the source tag of connections that carry no attribution
// (accepted by a listener that is not an attribution.Listener).
const DefaultTag = "direct"

// Entry is one finished request, handed to Options.Log.
type Entry struct {
	Time     time.Time // when the response was flushed
	Info     attribution.Info
	Request  *http.Request // nil for requests the server rejected before its handler ran
	Upstream string        // set by the handler with SetUpstream
	collector.Outcome
}

// Options configure Stats.
type Options struct {
	// Collector receives the outcomes. Required.
	Collector *collector.Collector
	// Log, if set, is called synchronously once per finished request. It
	// must not block and must not keep e.Request beyond the call.
	Log func(e *Entry)
	// DefaultTag is used for connections without attribution; "" means
	// DefaultTag.
	DefaultTag string
	// ConnectionsCountedElsewhere leaves ipng_connections_total and
	// ipng_connections_active to the agent for the connections the sock_ops
	// program stamped (attribution method sk_storage or cookie): the agent
	// adds those from the program's per-(tag, VIP) counts, and their folds
	// into an overflow series (ipng_series_overflow_total). Connections
	// attributed otherwise are still counted here. Set it when an ipng-stats
	// agent reads the program's counts (requests and in-flight gauges are
	// always recorded here).
	ConnectionsCountedElsewhere bool
}

// Stats records the requests of the servers it instruments. It has no
// mutable state of its own and may be shared by any number of servers.
type Stats struct {
	c          *collector.Collector
	logf       func(*Entry)
	defaultTag string
	noConns    bool
}

// New returns Stats recording into opts.Collector.
func New(opts Options) *Stats {
	s := &Stats{c: opts.Collector, logf: opts.Log, defaultTag: opts.DefaultTag, noConns: opts.ConnectionsCountedElsewhere}
	if s.defaultTag == "" {
		s.defaultTag = DefaultTag
	}
	return s
}

// Listen is attribution.Listen wrapped by s.Listener.
func (s *Stats) Listen(ctx context.Context, network, address string, a *attribution.Attributor) (net.Listener, error) {
	l, err := attribution.Listen(ctx, network, address, a)
	if err != nil {
		return nil, err
	}
	return s.Listener(l), nil
}

// Listener wraps l (normally an *attribution.Listener) so that each
// accepted connection resolves its series once and counts its bytes.
func (s *Stats) Listener(l net.Listener) net.Listener { return &listener{Listener: l, s: s} }

type listener struct {
	net.Listener
	s *Stats
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.s.Wrap(nc), nil
}

// Wrap turns an accepted connection into a *Conn: for servers that accept
// on their own.
func (s *Stats) Wrap(nc net.Conn) *Conn {
	info, ok := attribution.InfoOf(nc)
	if !ok {
		info.Tag = s.defaultTag
		if ap, err := netip.ParseAddrPort(nc.LocalAddr().String()); err == nil {
			info.Local = ap
		}
		if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
			info.Remote = ap
		}
	}
	return s.WrapInfo(nc, info)
}

// WrapInfo is Wrap for a connection attributed by its server
// (Attributor.Attribute on a socket it accepted itself).
func (s *Stats) WrapInfo(nc net.Conn, info attribution.Info) *Conn {
	c := &Conn{Conn: nc, st: s, info: info}
	stamped := info.Method == attribution.MethodSkStorage || info.Method == attribution.MethodCookie
	c.countConn = !(s.noConns && stamped)
	if c.countConn {
		c.series = s.c.Series(info.Tag, info.Local.Addr())
		c.series.ConnOpened()
	} else {
		// The agent adds this connection from the program's counts.
		c.series = s.c.SeriesCountedElsewhere(info.Tag, info.Local.Addr())
	}
	return c
}

// Instrument sets srv's ConnContext and ConnState (calling those already
// set) and wraps its Handler (http.DefaultServeMux when nil). Call it before
// srv serves a listener made by Listen or Listener.
func (s *Stats) Instrument(srv *http.Server) {
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = s.Handler(h)
	prevCtx, prevState := srv.ConnContext, srv.ConnState
	srv.ConnContext = func(ctx context.Context, nc net.Conn) context.Context {
		if prevCtx != nil {
			ctx = prevCtx(ctx, nc)
		}
		c := connOf(nc)
		if c == nil {
			return ctx
		}
		_, isTLS := nc.(*tls.Conn)
		c.plaintext = !isTLS
		return context.WithValue(ctx, connKey{}, c)
	}
	srv.ConnState = func(nc net.Conn, st http.ConnState) {
		if c := connOf(nc); c != nil {
			switch st {
			case http.StateIdle:
				c.flushed(false)
			case http.StateClosed:
				c.flushed(true)
			case http.StateHijacked:
				c.hijacked()
			}
		}
		if prevState != nil {
			prevState(nc, st)
		}
	}
}

type connKey struct{}

// Of returns the *Conn below nc (through wrappers with a NetConn method,
// *tls.Conn among them), nil when there is none.
func Of(nc net.Conn) *Conn { return connOf(nc) }

// connOf finds the *Conn below nc (through *tls.Conn).
func connOf(nc net.Conn) *Conn {
	for range 8 {
		switch v := nc.(type) {
		case *Conn:
			return v
		case interface{ NetConn() net.Conn }:
			nc = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// ConnFromContext returns the connection a request arrived on (use
// r.Context()); nil when it was not accepted through Stats.
func ConnFromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// Handler wraps h so that requests on connections from a Stats listener are
// recorded. Instrument does this; use Handler directly only together with
// a ConnContext and ConnState set up like Instrument's.
func (s *Stats) Handler(h http.Handler) http.Handler { return handler{h} }

type handler struct{ h http.Handler }

func (hh handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := ConnFromContext(r.Context())
	switch {
	case c == nil:
		hh.h.ServeHTTP(w, r)
	case r.ProtoMajor >= 2:
		serveH2(c, hh.h, w, r)
	default:
		rw := c.begin(w, r)
		defer c.end()
		hh.h.ServeHTTP(rw, r)
	}
}

// log hands the request to Options.Log. HTTP/1 requests of a connection
// are sequential and reuse the connection's Entry; HTTP/2 ones get their own.
func (s *Stats) log(c *Conn, r *http.Request, upstream string, now time.Time, o collector.Outcome) {
	if s.logf == nil {
		return
	}
	var e *Entry
	if r != nil && r.ProtoMajor >= 2 {
		e = new(Entry)
	} else {
		e = &c.entry
	}
	*e = Entry{Time: now, Info: c.info, Request: r, Upstream: upstream, Outcome: o}
	s.logf(e)
	*e = Entry{}
}
