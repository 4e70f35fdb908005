package top

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/charmbracelet/lipgloss"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/status"
)

// Styles colour the output; the zero value renders plain text.
type Styles struct {
	Header, Title, Warn, Error, Dim lipgloss.Style
	Class                           map[string]lipgloss.Style // by status.Classes
	colour                          bool
}

// NewStyles are the colours of the terminal UI for renderer r (which knows
// whether the terminal has colours at all).
func NewStyles(r *lipgloss.Renderer) Styles {
	s := Styles{colour: true,
		Header: r.NewStyle().Bold(true).Reverse(true),
		Title:  r.NewStyle().Bold(true),
		Warn:   r.NewStyle().Foreground(lipgloss.Color("3")).Bold(true),
		Error:  r.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		Dim:    r.NewStyle().Faint(true),
		Class: map[string]lipgloss.Style{
			"2xx": r.NewStyle().Foreground(lipgloss.Color("2")),
			"3xx": r.NewStyle().Foreground(lipgloss.Color("6")),
			"4xx": r.NewStyle().Foreground(lipgloss.Color("3")),
			"5xx": r.NewStyle().Foreground(lipgloss.Color("1")),
		},
	}
	return s
}

func (s Styles) apply(st lipgloss.Style, text string) string {
	if !s.colour {
		return text
	}
	return st.Render(text)
}

// column is one column of the table; columns with a higher drop number are
// left out first when the terminal is narrow.
type column struct {
	name  string
	left  bool
	drop  int
	class string // a code class: coloured
	value func(r status.Row) string
}

func columns(perTag bool) []column {
	vip := "VIP"
	if perTag {
		vip = "VIPS"
	}
	cols := []column{
		{name: "SOURCE_TAG", left: true, value: func(r status.Row) string { return r.Tag }},
		{name: vip, left: true, value: func(r status.Row) string { return r.VIP }},
		{name: "REQ/S", value: func(r status.Row) string { return status.FormatRate(r.M1) }},
		{name: "5M", drop: 6, value: func(r status.Row) string { return status.FormatRate(r.M5) }},
		{name: "15M", drop: 7, value: func(r status.Row) string { return status.FormatRate(r.M15) }},
		{name: "REQUESTS", drop: 3, value: func(r status.Row) string { return strconv.FormatUint(r.Requests, 10) }},
	}
	for i, c := range status.Classes {
		drop := map[string]int{"2xx": 2, "3xx": 5, "4xx": 2, "5xx": 1, "other": 5}[c]
		cols = append(cols, column{name: strings.ToUpper(c), drop: drop, class: c, value: func(r status.Row) string { return r.Share[i] }})
	}
	return append(cols,
		column{name: "P50", drop: 4, value: func(r status.Row) string { return r.P50 }},
		column{name: "P99", drop: 2, value: func(r status.Row) string { return r.P99 }},
		column{name: "IN/S", drop: 5, value: func(r status.Row) string { return status.FormatBytesPerSecond(r.In) }},
		column{name: "OUT/S", drop: 4, value: func(r status.Row) string { return status.FormatBytesPerSecond(r.Out) }},
		column{name: "CONNS", drop: 3, value: func(r status.Row) string {
			if !r.HasActive {
				return "–"
			}
			return strconv.FormatInt(r.Active, 10)
		}},
	)
}

// Table renders rows as an aligned table no wider than width (0: no
// limit), leaving out the least important columns first.
func Table(rows []status.Row, perTag bool, width int, st Styles) string {
	cols := columns(perTag)
	cells := make([][]string, len(rows))
	widths := make([]int, len(cols))
	for i, c := range cols {
		widths[i] = utf8.RuneCountInString(c.name)
	}
	for r, row := range rows {
		cells[r] = make([]string, len(cols))
		for i, c := range cols {
			cells[r][i] = c.value(row)
			widths[i] = max(widths[i], utf8.RuneCountInString(cells[r][i]))
		}
	}
	keep := make([]bool, len(cols))
	for i := range keep {
		keep[i] = true
	}
	total := func() int {
		n := 0
		for i, k := range keep {
			if k {
				n += widths[i] + 2
			}
		}
		return n - 2
	}
	for level := 7; width > 0 && total() > width && level > 0; level-- {
		for i, c := range cols {
			if c.drop == level {
				keep[i] = false
			}
		}
	}
	var b strings.Builder
	line := func(values []string, style func(i int, s string) string) string {
		var l strings.Builder
		first := true
		for i, v := range values {
			if !keep[i] {
				continue
			}
			if !first {
				l.WriteString("  ")
			}
			first = false
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(v))
			if cols[i].left {
				l.WriteString(style(i, v) + pad)
			} else {
				l.WriteString(pad + style(i, v))
			}
		}
		return strings.TrimRight(l.String(), " ")
	}
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	head := line(names, func(_ int, s string) string { return s })
	if st.colour && width > 0 {
		head += strings.Repeat(" ", max(0, width-utf8.RuneCountInString(head)))
	}
	b.WriteString(st.apply(st.Header, head) + "\n")
	for _, r := range cells {
		b.WriteString(line(r, func(i int, s string) string {
			if c := cols[i].class; c != "" && s != "–" {
				return st.apply(st.Class[c], s)
			}
			return s
		}) + "\n")
	}
	return b.String()
}

// HealthLine is the agent's health in one line: what the status page shows
// in its header.
func HealthLine(d *exporter.Document, st Styles) string {
	var parts []string
	for _, f := range status.HealthFacts(*d) {
		p := f.Name + " " + f.Value
		if f.Warn {
			p = st.apply(st.Warn, p+" !")
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " · ")
}

// Snapshot renders what `ipng-stats top --once` prints: the health line and
// the table.
func Snapshot(d *exporter.Document, v View, width int, st Styles) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nupdated %s\n\n", wrap(HealthLine(d, st), width), d.Meta.GeneratedAt.UTC().Format(time.RFC3339))
	rows := Rows(d, v)
	if len(rows) == 0 {
		if v.Filter != "" {
			fmt.Fprintf(&b, "no series match %q\n", v.Filter)
		} else {
			b.WriteString("no series yet: no request has been counted\n")
		}
		return b.String()
	}
	b.WriteString(Table(rows, v.PerTag, width, st))
	return b.String()
}
