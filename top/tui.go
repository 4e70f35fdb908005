package top

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/status"
)

// Options configure the terminal UI.
type Options struct {
	Source   *Source
	Interval time.Duration // refresh; default 1 s
	View     View
	NoColour bool
	In       io.Reader
	Out      io.Writer
}

// Run shows the live terminal UI until the user quits (q, ctrl+c) or ctx
// is done.
func Run(ctx context.Context, o Options) error {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	r := lipgloss.NewRenderer(o.Out)
	st := NewStyles(r)
	if o.NoColour {
		st = Styles{}
	}
	m := &model{opts: o, view: o.View, st: st, ctx: ctx}
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(o.In), tea.WithOutput(o.Out), tea.WithAltScreen())
	_, err := p.Run()
	if err == tea.ErrProgramKilled && ctx.Err() != nil {
		return nil
	}
	return err
}

// model is the bubbletea model: the last document, the last error, the view
// settings and the terminal size.
type model struct {
	opts          Options
	ctx           context.Context
	st            Styles
	view          View
	doc           *exporter.Document
	err           error
	lastOK        time.Time
	width, height int
	editing       bool // typing a filter after "/"
	rising        rising
}

type fetched struct {
	doc *exporter.Document
	err error
}

type tick struct{}

func (m *model) fetch() tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(m.ctx, max(m.opts.Interval, 2*time.Second))
		defer cancel()
		d, err := m.opts.Source.Fetch(ctx)
		return fetched{d, err}
	}
}

func (m *model) Init() tea.Cmd { return m.fetch() }

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case fetched:
		if msg.err != nil {
			m.err = msg.err
		} else {
			m.rising.update(msg.doc)
			m.doc, m.err, m.lastOK = msg.doc, nil, time.Now()
		}
		return m, tea.Tick(m.opts.Interval, func(time.Time) tea.Msg { return tick{} })
	case tick:
		return m, m.fetch()
	case tea.KeyMsg:
		return m, m.key(msg)
	}
	return m, nil
}

// key handles a key press; see the help line.
func (m *model) key(k tea.KeyMsg) tea.Cmd {
	if k.Type == tea.KeyRunes && len(k.Runes) > 1 {
		// Keys typed faster than the terminal is read arrive as one message.
		var cmds []tea.Cmd
		for _, r := range k.Runes {
			cmds = append(cmds, m.key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}}))
		}
		return tea.Batch(cmds...)
	}
	if m.editing {
		switch k.Type {
		case tea.KeyEnter:
			m.editing = false
		case tea.KeyEsc:
			m.editing, m.view.Filter = false, ""
		case tea.KeyBackspace:
			if r := []rune(m.view.Filter); len(r) > 0 {
				m.view.Filter = string(r[:len(r)-1])
			}
		case tea.KeyRunes, tea.KeySpace:
			if len(m.view.Filter) < 64 {
				m.view.Filter += string(k.Runes)
			}
		case tea.KeyCtrlC:
			return tea.Quit
		}
		return nil
	}
	switch k.String() {
	case "q", "ctrl+c":
		return tea.Quit
	case "/":
		m.editing = true
	case "esc":
		m.view.Filter = ""
	case "v":
		m.view.PerTag = !m.view.PerTag
	case "s":
		m.view.Sort = (m.view.Sort + 1) % SortKey(len(sortNames))
	case "r":
		m.view.Sort = SortRate
	case "n":
		m.view.Sort = SortRequests
	case "l":
		m.view.Sort = SortLatency
	case "e":
		m.view.Sort = SortErrors
	case "t":
		m.view.Sort = SortTag
	}
	return nil
}

func (m *model) View() string {
	var b strings.Builder
	title := "ipng-stats top · " + m.opts.Source.URL()
	b.WriteString(m.st.apply(m.st.Title, clip(title, m.width)) + "\n")
	switch {
	case m.doc == nil && m.err == nil:
		b.WriteString("connecting…\n")
	case m.doc == nil:
		b.WriteString(m.st.apply(m.st.Error, fold("cannot reach the agent: "+m.err.Error(), m.width)) + "\n")
		b.WriteString(fmt.Sprintf("retrying every %v; q quits\n", m.opts.Interval))
	default:
		b.WriteString(wrap(HealthLine(m.doc, m.st)+m.rising.text(m.st), m.width) + "\n")
		if m.err != nil {
			b.WriteString(m.st.apply(m.st.Error, fold(fmt.Sprintf("connection lost, showing data from %s ago, retrying: %v",
				time.Since(m.lastOK).Round(time.Second), m.err), m.width)) + "\n")
		}
		// The rest of the screen, less the help line.
		b.WriteString(m.body(m.height - strings.Count(b.String(), "\n") - 1))
	}
	b.WriteString(m.st.apply(m.st.Dim, clip(m.help(), m.width)))
	return b.String()
}

// body is the table, cut to room lines (when the height is known).
func (m *model) body(room int) string {
	rows := Rows(m.doc, m.view)
	if len(rows) == 0 {
		if m.view.Filter != "" {
			return fmt.Sprintf("no series match %q\n", m.view.Filter)
		}
		return "no series yet: no request has been counted\n"
	}
	lines := strings.SplitAfter(Table(rows, m.view.PerTag, m.width, m.st), "\n")
	lines = lines[:len(lines)-1] // after the last newline
	if m.height > 0 && len(lines) > room && room > 1 {
		more := len(lines) - room + 1
		lines = append(lines[:room-1], fmt.Sprintf("… %d more rows (/ filters)\n", more))
	}
	return strings.Join(lines, "")
}

func (m *model) help() string {
	mode := "per VIP"
	if m.view.PerTag {
		mode = "per tag"
	}
	if m.editing {
		return fmt.Sprintf("filter: %s▏ (enter keeps, esc clears)", m.view.Filter)
	}
	f := ""
	if m.view.Filter != "" {
		f = fmt.Sprintf(" · filter %q (esc clears)", m.view.Filter)
	}
	return fmt.Sprintf("sort %s · %s%s · keys: s sort  r n l e t  / filter  v per-VIP/per-tag  q quit", m.view.Sort, mode, f)
}

// clip cuts s to width runes (0: no limit).
func clip(s string, width int) string {
	if r := []rune(s); width > 0 && len(r) > width {
		return string(r[:width-1]) + "…"
	}
	return s
}

// wrap breaks a plain line at " · " separators to fit width.
func wrap(s string, width int) string {
	if width <= 0 || lipgloss.Width(s) <= width {
		return s
	}
	var out, line []string
	for _, part := range strings.Split(s, " · ") {
		if len(line) > 0 && lipgloss.Width(strings.Join(append(line, part), " · ")) > width {
			out = append(out, strings.Join(line, " · "))
			line = nil
		}
		line = append(line, part)
	}
	return strings.Join(append(out, strings.Join(line, " · ")), "\n")
}

// fold breaks s into lines of at most width runes (0: no limit), at
// spaces where it can.
func fold(s string, width int) string {
	r := []rune(s)
	if width <= 0 || len(r) <= width {
		return s
	}
	var lines []string
	for len(r) > width {
		cut := width
		for i := width; i > width/2; i-- {
			if r[i] == ' ' {
				cut = i
				break
			}
		}
		lines = append(lines, strings.TrimRight(string(r[:cut]), " "))
		r = []rune(strings.TrimLeft(string(r[cut:]), " "))
	}
	return strings.Join(append(lines, string(r)), "\n")
}

// rising tells whether ifindex misses or attribution fallbacks went up
// between the last two documents: something new arrives unbound or
// unattributed.
type rising struct {
	seen                  bool
	misses, fallbacks     uint64
	missesUp, fallbacksUp bool
}

func (r *rising) update(d *exporter.Document) {
	m, f := status.Total(d.Meta.IfindexMisses), status.Total(d.Meta.AttributionFallbacks)
	r.missesUp, r.fallbacksUp = r.seen && m > r.misses, r.seen && f > r.fallbacks
	r.seen, r.misses, r.fallbacks = true, m, f
}

func (r *rising) text(st Styles) string {
	var parts []string
	if r.missesUp {
		parts = append(parts, "misses rising")
	}
	if r.fallbacksUp {
		parts = append(parts, "fallbacks rising")
	}
	if len(parts) == 0 {
		return ""
	}
	return " · " + st.apply(st.Warn, strings.Join(parts, ", ")+" !")
}
