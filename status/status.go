package status

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/exporter"
)

// Path is where Mount serves the page; its assets are below it.
const Path = "/status/"

// pollInterval is how often the page's script fetches the JSON document.
const pollInterval = 2 * time.Second

// maxFilterLength bounds ?q=.
const maxFilterLength = 128

//go:embed assets
var assets embed.FS

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"rate":  FormatRate,
	"pct":   FormatShare,
	"dur":   FormatSeconds,
	"bps":   FormatBytesPerSecond,
	"bytes": FormatBytes,
}).ParseFS(assets, "assets/page.html"))

// contentSecurityPolicy allows nothing but this origin: no inline script or
// style, no other host.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Options configure a Handler.
type Options struct {
	// Document returns the exporter's JSON document for a filter. Required.
	Document func(collector.Filter) exporter.Document
	// JSONPath is the path the script polls; default exporter.StatszPath.
	JSONPath string
	// Host names the machine in the title; default os.Hostname.
	Host   string
	Logger *slog.Logger
}

// Handler serves the page at its root and the embedded assets below it.
type Handler struct {
	opts   Options
	log    *slog.Logger
	static http.Handler
}

// New builds the handler. Mount it at a path ending in "/".
func New(opts Options) *Handler {
	if opts.JSONPath == "" {
		opts.JSONPath = exporter.StatszPath
	}
	if opts.Host == "" {
		opts.Host, _ = os.Hostname()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sub, _ := fs.Sub(assets, "assets")
	return &Handler{opts: opts, log: log.With("component", "status"), static: http.FileServerFS(sub)}
}

// Mount serves the page of srv's documents at Path and links it from the
// landing page.
func Mount(srv *exporter.Server, logger *slog.Logger) error {
	return srv.Mount(Path, "Status", "live status page: rates, codes, latency and health per source tag and VIP",
		New(Options{Document: srv.Document, Logger: logger}))
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	name := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	switch name {
	case "":
		h.servePage(w, r)
	case "status.js", "status.css", "icon.svg":
		w.Header().Set("Cache-Control", "no-cache")
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + name
		h.static.ServeHTTP(w, r2)
	default:
		http.NotFound(w, r)
	}
}

func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if len(q) > maxFilterLength {
		http.Error(w, "filter q longer than "+strconv.Itoa(maxFilterLength)+" bytes", http.StatusBadRequest)
		return
	}
	doc := h.opts.Document(collector.Filter{})
	v := newView(doc, q, h.opts.Host)
	v.JSONURL = relative(r.URL.Path, h.opts.JSONPath) + "?format=json"
	v.Interval = pollInterval.Milliseconds()
	var buf bytes.Buffer
	if err := page.Execute(&buf, v); err != nil {
		h.log.Error("rendering the status page", "err", err)
		http.Error(w, "rendering the status page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// relative returns target (an absolute path) relative to the directory of
// page, so that the page keeps working behind a reverse proxy that mounts
// the agent under a prefix.
func relative(page, target string) string {
	depth := strings.Count(strings.TrimPrefix(page, "/"), "/")
	return strings.Repeat("../", depth) + strings.TrimPrefix(target, "/")
}
