package monitoring

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Every panel and variable queries the datasource the user picks in the
// ${datasource} variable: no UID is hard-coded.
var datasource = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// Label matchers of the template variables. The instance filter keeps the
// job one, so one Grafana can show several ipng-stats jobs.
const (
	selInstance = `job=~"$job", instance=~"$instance"`
	selTags     = selInstance + `, source_tag=~"$source_tag", vip=~"$vip"`
	selVIP      = selInstance + `, source_tag=~"$source_tag", vip="$vip"`
)

// Grafana unit identifiers.
const (
	unitReqps   = "reqps"
	unitSeconds = "s"
	unitBits    = "bps"
	unitBytes   = "bytes"
	unitRatio   = "percentunit"
	unitCount   = "short"
	unitPerSec  = "cps"
)

func newDashboard(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"ipng-stats"}).
		Editable().
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Type("prometheus")).
		Link(dashboard.NewDashboardLinkBuilder("ipng-stats").
			Type(dashboard.DashboardLinkTypeDashboards).Tags([]string{"ipng-stats"}).AsDropdown(true).
			IncludeVars(true).KeepTime(true))
}

// queryVar is a variable filled from label_values(metric{match}, label).
func queryVar(name, label, query string, multi bool) *dashboard.QueryVariableBuilder {
	v := dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Datasource(datasource).
		Query(dashboard.StringOrMap{String: cog.ToPtr(query)}).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc)
	if multi {
		v = v.Multi(true).IncludeAll(true).AllValue(".*").
			Current(dashboard.VariableOption{Text: dashboard.StringOrArrayOfString{String: cog.ToPtr("All")},
				Value: dashboard.StringOrArrayOfString{String: cog.ToPtr("$__all")}})
	}
	return v
}

func jobVar() *dashboard.QueryVariableBuilder {
	return queryVar("job", "Job", `label_values(ipng_build_info, job)`, true)
}

func instanceVar() *dashboard.QueryVariableBuilder {
	return queryVar("instance", "Instance", `label_values(ipng_build_info{job=~"$job"}, instance)`, true)
}

func tagVar() *dashboard.QueryVariableBuilder {
	return queryVar("source_tag", "Source tag", `label_values(ipng_requests_total{`+selInstance+`}, source_tag)`, true)
}

// query is one PromQL target; legend "" lets Grafana name the series.
func query(expr, legend string) *prometheus.DataqueryBuilder {
	q := prometheus.NewDataqueryBuilder().Expr(expr).Datasource(datasource)
	if legend != "" {
		q = q.LegendFormat(legend)
	}
	return q
}

// instant is a table query evaluated once at the end of the range.
func instant(expr string) *prometheus.DataqueryBuilder {
	return query(expr, "").Instant().Format(prometheus.PromQueryFormatTable)
}

// graph is a time-series panel; its description must say what it shows
// and what to do when it looks wrong.
func graph(title, description, unit string, targets ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(datasource).
		Unit(unit).
		Min(0).
		FillOpacity(10).
		Height(8).Span(12).
		Legend(common.NewVizLegendOptionsBuilder().
			DisplayMode(common.LegendDisplayModeTable).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true).
			Calcs([]string{"mean", "max", "lastNotNull"})).
		Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending))
	for i, t := range targets {
		p = p.WithTarget(t.RefId(refID(i)))
	}
	return p
}

// refID names the i-th target of a panel: A, B, C...
func refID(i int) string { return string(rune('A' + i)) }

// stacked is graph with the series stacked.
func stacked(title, description, unit string, targets ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	return graph(title, description, unit, targets...).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal))
}

// single is a one-number stat panel with a sparkline.
func single(title, description, unit string, target *prometheus.DataqueryBuilder, steps ...dashboard.Threshold) *stat.PanelBuilder {
	p := stat.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(datasource).
		Unit(unit).
		Height(4).Span(6).
		GraphMode(common.BigValueGraphModeArea).
		ColorMode(common.BigValueColorModeValue).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"})).
		WithTarget(target.RefId(refID(0)))
	if len(steps) > 0 {
		p = p.Thresholds(dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(steps))
	}
	return p
}

// step is a threshold colour from value on; base (nil value) is the first.
func step(color string, value *float64) dashboard.Threshold {
	return dashboard.Threshold{Color: color, Value: value}
}

// heat is a heatmap of pre-bucketed Prometheus histogram buckets.
func heat(title, description, unit, expr string) *heatmap.PanelBuilder {
	return heatmap.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(datasource).
		Height(8).Span(12).
		Calculate(false).
		YAxis(heatmap.NewYAxisConfigBuilder().Unit(unit)).
		Color(heatmap.NewHeatmapColorOptionsBuilder().
			Mode(heatmap.HeatmapColorModeScheme).
			Scheme("Oranges").
			Exponent(0.5).
			Fill("dark-orange").
			Steps(64).
			Scale(heatmap.HeatmapColorScaleExponential)).
		CellGap(1).
		RowsFrame(heatmap.NewRowsHeatmapOptionsBuilder().Layout(common.HeatmapCellLayoutLe)).
		WithTarget(query(expr, "{{le}}").Format(prometheus.PromQueryFormatHeatmap).RefId(refID(0)))
}

// tableOf is a table of instant queries.
func tableOf(title, description string, targets ...*prometheus.DataqueryBuilder) *table.PanelBuilder {
	p := table.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(datasource).
		Height(8).Span(12).
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{"sum"}))
	for i, t := range targets {
		p = p.WithTarget(t.RefId(refID(i)))
	}
	return p
}
