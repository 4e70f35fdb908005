package monitoring

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// bundleDir is the committed bundle, relative to this package.
const bundleDir = "../deploy/monitoring"

func dashboardFiles() []string { return []string{FileOverview, FileVIP, FileAgentHealth} }

// decodeStrict decodes dashboard JSON into the SDK's typed model, failing
// on any unknown or mistyped field. The SDK's strict decoder returns its
// error list (empty on success) but drops panels it decoded, so the value
// comes from a second, ordinary decode.
func decodeStrict(b []byte) (*dashboard.Dashboard, error) {
	plugins.RegisterDefaultPlugins()
	var strict dashboard.Dashboard
	if err := strict.UnmarshalJSONStrict(b); err != nil {
		var errs cog.BuildErrors
		if !errors.As(err, &errs) || len(errs) > 0 {
			return nil, err
		}
	}
	var d dashboard.Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// TestDashboardsDecodeStrictly: every committed dashboard decodes into the
// SDK's dashboard model with no unknown field, every panel is a typed panel
// whose queries are typed Prometheus queries, and an unknown field is
// caught.
func TestDashboardsDecodeStrictly(t *testing.T) {
	for _, name := range dashboardFiles() {
		b, err := os.ReadFile(filepath.Join(bundleDir, name))
		if err != nil {
			t.Fatal(err)
		}
		d, err := decodeStrict(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var raw struct{ Panels []json.RawMessage }
		json.Unmarshal(b, &raw)
		if len(d.Panels) == 0 || len(d.Panels) != len(raw.Panels) {
			t.Fatalf("%s: decoded %d panels, the file has %d", name, len(d.Panels), len(raw.Panels))
		}
		for i, p := range d.Panels {
			if p.RowPanel != nil {
				continue
			}
			if p.Panel == nil || len(p.Panel.Targets) == 0 {
				t.Fatalf("%s: panel %d has no typed targets", name, i)
			}
			for _, q := range p.Panel.Targets {
				if _, ok := q.(*prometheus.Dataquery); !ok {
					t.Errorf("%s: panel %q: target is %T, not a Prometheus query", name, *p.Panel.Title, q)
				}
			}
		}
		bad := strings.Replace(string(b), `"title"`, `"titel": "x", "title"`, 1)
		if _, err := decodeStrict([]byte(bad)); err == nil {
			t.Errorf("%s: an unknown field was not rejected", name)
		}
	}
}

// panelJSON is what the checks below read of a panel.
type panelJSON struct {
	Type        string
	Title       string
	Description string
	Repeat      string
	Datasource  struct{ UID string }
	FieldConfig struct{ Defaults struct{ Unit string } }
	Targets     []struct{ Expr string }
}

// TestPanelsComplete: every panel says what to do when it looks wrong, uses
// the datasource variable, has a unit where it plots numbers, and rates
// over $__rate_interval (fixed windows only through recording rules).
func TestPanelsComplete(t *testing.T) {
	fixedWindow := regexp.MustCompile(`\[[0-9]+[smhd]\]`)
	for _, name := range dashboardFiles() {
		b, err := os.ReadFile(filepath.Join(bundleDir, name))
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels     []panelJSON
			Templating struct {
				List []struct{ Name, Type string }
			}
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		if len(d.Templating.List) == 0 || d.Templating.List[0].Type != "datasource" {
			t.Errorf("%s: the first variable is not the datasource", name)
		}
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			if len(p.Description) < 80 {
				t.Errorf("%s: panel %q: description too short to say what to do: %q", name, p.Title, p.Description)
			}
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q: datasource %q, want ${datasource}", name, p.Title, p.Datasource.UID)
			}
			if p.Type != "table" && p.Type != "heatmap" && p.FieldConfig.Defaults.Unit == "" {
				t.Errorf("%s: panel %q has no unit", name, p.Title)
			}
			for _, q := range p.Targets {
				if fixedWindow.MatchString(q.Expr) {
					t.Errorf("%s: panel %q: fixed rate window in %q", name, p.Title, q.Expr)
				}
				if strings.Contains(q.Expr, "rate(") && !strings.Contains(q.Expr, "[$__rate_interval]") {
					t.Errorf("%s: panel %q: rate without $__rate_interval: %q", name, p.Title, q.Expr)
				}
			}
		}
	}
}

// TestOverviewRepeatsPerTag: the Overview has the variables the operators
// filter by and a row repeated per source tag.
func TestOverviewRepeatsPerTag(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(bundleDir, FileOverview))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []panelJSON
		Templating struct {
			List []struct {
				Name  string
				Multi bool
			}
		}
	}
	json.Unmarshal(b, &d)
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
		if (v.Name == "source_tag" || v.Name == "vip") && !v.Multi {
			t.Errorf("variable %s is not multi-value", v.Name)
		}
	}
	if got := strings.Join(vars, ","); got != "datasource,job,instance,source_tag,vip" {
		t.Errorf("variables %s", got)
	}
	repeated := false
	for _, p := range d.Panels {
		repeated = repeated || (p.Type == "row" && p.Repeat == "source_tag")
	}
	if !repeated {
		t.Error("no row repeats per source_tag")
	}
}
