package top

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	promcfg "github.com/prometheus/common/config"

	"github.com/ipng/ipng-stats/exporter"
)

// DefaultURL is the agent on this host.
const DefaultURL = "http://127.0.0.1:9113"

// maxDocument bounds the JSON document read (a cap of 10k series is ~30 MB).
const maxDocument = 256 << 20

// Source fetches an agent's JSON document.
type Source struct {
	url    string
	client *http.Client
}

// NewSource reads from the agent at rawURL: its base (http://host:9113) or
// the full path of its JSON document. httpConfigFile, if set, is a
// Prometheus HTTP client configuration (basic_auth, authorization,
// tls_config, proxy_url, ...) as promtool's --http.config.file takes;
// user:password in the URL also sends basic auth.
func NewSource(rawURL, httpConfigFile string, timeout time.Duration) (*Source, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("agent URL %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("agent URL %q: want http://HOST:PORT or https://HOST:PORT", rawURL)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = exporter.StatszPath
	}
	q := u.Query()
	q.Set("format", "json")
	u.RawQuery = q.Encode()
	cfg := promcfg.DefaultHTTPClientConfig
	if httpConfigFile != "" {
		c, _, err := promcfg.LoadHTTPConfigFile(httpConfigFile)
		if err != nil {
			return nil, fmt.Errorf("http config file %s: %w", httpConfigFile, err)
		}
		cfg = *c
	}
	client, err := promcfg.NewClientFromConfig(cfg, "ipng-stats-top")
	if err != nil {
		return nil, fmt.Errorf("http client: %w", err)
	}
	client.Timeout = timeout
	return &Source{url: u.String(), client: client}, nil
}

// URL is the document's URL, without credentials.
func (s *Source) URL() string {
	u, _ := url.Parse(s.url)
	u.User = nil
	return u.String()
}

// Fetch gets and decodes one document.
func (s *Source) Fetch(ctx context.Context) (*exporter.Document, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", s.URL(), unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("fetching %s: %s: %s", s.URL(), resp.Status, strings.TrimSpace(string(b)))
	}
	var d exporter.Document
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDocument)).Decode(&d); err != nil {
		return nil, fmt.Errorf("decoding the document of %s: %w", s.URL(), err)
	}
	if d.Schema != exporter.SchemaVersion {
		return nil, fmt.Errorf("%s: JSON schema %d, this top reads schema %d", s.URL(), d.Schema, exporter.SchemaVersion)
	}
	return &d, nil
}

// unwrapURLError drops *url.Error's repetition of the method and URL.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
