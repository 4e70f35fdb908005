//go:build k8s

package k8s

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

func (c *cluster) httpClient() *http.Client {
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext:       c.netns.Dial,                          // the test stays in the host's netns, its sockets not
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the apiserver's self-signed cert
		DisableKeepAlives: true,
	}}
}

// api does one request to the API server and decodes the JSON answer.
func (c *cluster) api(method, path string, body any) (map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "https://"+c.nodeIP+":6443"+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	ct := "application/json"
	if method == "PATCH" {
		ct = "application/merge-patch+json"
	}
	req.Header.Set("Content-Type", ct)
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return out, nil
}

// field walks a decoded object: field(o, "status", "phase").
func field(o any, keys ...string) any {
	for _, k := range keys {
		m, ok := o.(map[string]any)
		if !ok {
			return nil
		}
		o = m[k]
	}
	return o
}

// condition is the status of a condition type of a node or a pod.
func condition(o map[string]any, typ string) string {
	conds, _ := field(o, "status", "conditions").([]any)
	for _, cd := range conds {
		if field(cd, "type") == typ {
			s, _ := field(cd, "status").(string)
			return s
		}
	}
	return ""
}

// resourcePath is where an object of the manifest is created.
func resourcePath(obj map[string]any) (string, error) {
	kind, _ := obj["kind"].(string)
	ns, _ := field(obj, "metadata", "namespace").(string)
	switch kind {
	case "Namespace":
		return "/api/v1/namespaces", nil
	case "ConfigMap":
		return "/api/v1/namespaces/" + ns + "/configmaps", nil
	case "DaemonSet":
		return "/apis/apps/v1/namespaces/" + ns + "/daemonsets", nil
	}
	return "", fmt.Errorf("no path for kind %q", kind)
}
