package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// promServer is Debian's prometheus, run by a test in srv's namespace with
// its own storage, scraping every second and evaluating rules every second.
type promServer struct {
	base   string
	client *http.Client
}

// startPrometheus starts prometheus on 127.0.0.1:port in srv's namespace,
// scraping target (job "ipng-stats") and loading ruleFiles. It is killed
// and its storage removed when the test ends.
func (e *env) startPrometheus(port int, target string, ruleFiles ...string) *promServer {
	e.t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Skip(e.t, "prometheus not installed (apt-get install prometheus)")
	}
	dir := e.t.TempDir()
	var rules strings.Builder
	for _, f := range ruleFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			e.t.Fatal(err)
		}
		fmt.Fprintf(&rules, "  - %q\n", abs)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
%sscrape_configs:
  - job_name: ipng-stats
    static_configs:
      - targets: [%q]
`, rules.String(), target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		e.t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := e.start("prometheus", e.topo.Srv.Exec(context.Background(), bin, "--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn"), false)
	ps := &promServer{base: "http://" + addr, client: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: e.topo.Srv.Dial}}}
	e.t.Cleanup(ps.client.CloseIdleConnections)
	testenv.Eventually(e.t, 20*time.Second, func() bool {
		select {
		case <-p.done:
			e.t.Fatalf("prometheus exited: %v\n%s", p.err, p.out.String())
		default:
		}
		resp, err := ps.client.Get(ps.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "prometheus ready")
	return ps
}

// promSample is one series of an instant query's answer.
type promSample struct {
	Labels map[string]string
	Value  float64
}

// query runs an instant PromQL query now and returns its vector or scalar
// as samples (a scalar is one sample without labels).
func (p *promServer) query(q string) ([]promSample, error) {
	var r struct {
		Status, Error string
		Data          struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		}
	}
	if err := p.get("/api/v1/query?query="+url.QueryEscape(q), &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, r.Error)
	}
	switch r.Data.ResultType {
	case "scalar":
		var v [2]any
		json.Unmarshal(r.Data.Result, &v)
		f, _ := strconv.ParseFloat(fmt.Sprint(v[1]), 64)
		return []promSample{{Value: f}}, nil
	case "vector":
		var vec []struct {
			Metric map[string]string
			Value  [2]any
		}
		if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
			return nil, err
		}
		out := make([]promSample, 0, len(vec))
		for _, s := range vec {
			f, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
			out = append(out, promSample{Labels: s.Metric, Value: f})
		}
		return out, nil
	}
	return nil, fmt.Errorf("query %q: result type %q", q, r.Data.ResultType)
}

// labelValues is what Grafana's label_values(match, label) returns.
func (p *promServer) labelValues(match, label string) ([]string, error) {
	var r struct {
		Status, Error string
		Data          []string
	}
	if err := p.get("/api/v1/label/"+label+"/values?match[]="+url.QueryEscape(match), &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("label_values(%s, %s): %s", match, label, r.Error)
	}
	return r.Data, nil
}

func (p *promServer) get(path string, v any) error {
	resp, err := p.client.Get(p.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// hasData reports whether samples hold at least one number (not NaN).
func hasData(samples []promSample) bool {
	for _, s := range samples {
		if !math.IsNaN(s.Value) {
			return true
		}
	}
	return false
}
