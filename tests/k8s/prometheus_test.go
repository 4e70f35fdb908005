//go:build k8s

package k8s

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"
)

// prometheusBin is Prometheus 3 (github.com/prometheus/prometheus
// v0.3xx), built by `make test-k8s` with the Kubernetes service discovery
// only into the components' cache: Debian's prometheus is built without
// kubernetes_sd_configs.
func prometheusBin() string { return filepath.Join(cacheDir(), "prometheus") }

// startPrometheus runs a Prometheus in the netns on 127.0.0.1:9090 that
// finds its targets with kubernetes_sd_configs (role pod) through the API
// server, as the user guide's scrape configuration: the pods whose
// prometheus.io/* annotations (the chart's) ask for it.
func (c *cluster) startPrometheus() {
	cfg := c.write("prometheus/prometheus.yml", fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: ipng-stats
    kubernetes_sd_configs:
      - role: pod
        api_server: https://%s:6443
        authorization: {credentials: %q}
        tls_config: {insecure_skip_verify: true}
        namespaces: {names: [ipng-stats]}
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        action: keep
        regex: "true"
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        regex: (.+)
        target_label: __metrics_path__
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: (.+);(.+)
        replacement: $1:$2
        target_label: __address__
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_node_name]
        target_label: node
`, c.nodeIP, c.token))
	c.start("prometheus", prometheusBin(), "--config.file", cfg,
		"--storage.tsdb.path", c.path("prometheus", "data"),
		"--web.listen-address", "127.0.0.1:9090")
}

// promSample is one sample of an instant query.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// promQuery runs an instant query on the test's Prometheus.
func (c *cluster) promQuery(q string) ([]promSample, error) {
	resp, err := c.httpClient().Get("http://127.0.0.1:9090/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("query %s: %s: %s", q, resp.Status, b)
	}
	var r struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	var out []promSample
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v", q, s.Value[1])
		}
		out = append(out, promSample{s.Metric, v})
	}
	return out, nil
}

// promScraped waits until the Prometheus has discovered the pod through
// the API server (its name and node come from the pod object) and scraped
// exactly want requests of tag from it.
func (c *cluster) promScraped(pod, tag string, want float64) {
	c.t.Helper()
	c.waitFor("Prometheus discovers and scrapes "+pod, 2*time.Minute, func() error {
		up, err := c.promQuery(`up{job="ipng-stats"}`)
		if err != nil {
			return err
		}
		found := false
		for _, s := range up {
			if s.Metric["pod"] == pod {
				found = true
				if s.Value != 1 || s.Metric["node"] != c.node || s.Metric["instance"] != c.nodeIP+":9113" {
					return fmt.Errorf("target %v up=%v", s.Metric, s.Value)
				}
			}
		}
		if !found {
			return fmt.Errorf("pod %s not among the targets: %v", pod, up)
		}
		q := fmt.Sprintf(`ipng_requests_total{job="ipng-stats",pod=%q,source_tag=%q,vip=%q,code="2xx"}`, pod, tag, vip)
		got, err := c.promQuery(q)
		if err != nil {
			return err
		}
		if len(got) != 1 || got[0].Value != want {
			return fmt.Errorf("%s = %v, want one sample %v", q, got, want)
		}
		return nil
	}, "prometheus")
}
