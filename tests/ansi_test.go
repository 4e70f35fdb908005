package tests

import (
	"context"
	"encoding/json"
	"html"
	"regexp"
	"strconv"
	"strings"

	"github.com/chromedp/chromedp"
)

// sgr matches a Select Graphic Rendition escape sequence.
var sgr = regexp.MustCompile("\x1b\\[([0-9;]*)m")

// ansiColours are the 8 basic colours of a dark terminal theme.
var ansiColours = [8]string{"#1e1e1e", "#e06c75", "#98c379", "#e5c07b", "#61afef", "#c678dd", "#56b6c2", "#d0d0d0"}

// ansiHTML renders a tmux capture with escapes (capture-pane -e) as an HTML
// page of a dark terminal, for a screenshot of `ipng-stats top` in the docs.
// It knows the attributes top uses: bold, faint, reverse and the 8 colours.
func ansiHTML(capture string) string {
	var b strings.Builder
	b.WriteString(`<!doctype html><html><head><meta charset="utf-8"><style>
body { margin: 0; background: #1e1e1e; }
pre { margin: 0; padding: 12px; color: #d0d0d0; background: #1e1e1e; font: 14px/1.35 "DejaVu Sans Mono", monospace; }
</style></head><body><pre>`)
	var bold, faint, reverse bool
	fg, bg := -1, -1
	open := false
	last := 0
	flush := func(text string) {
		if text == "" {
			return
		}
		if open {
			b.WriteString("</span>")
			open = false
		}
		f, g := "", ""
		if fg >= 0 {
			f = ansiColours[fg]
		}
		if bg >= 0 {
			g = ansiColours[bg]
		}
		if reverse {
			f, g = cmpOr(g, "#1e1e1e"), cmpOr(f, "#d0d0d0")
		}
		var style []string
		if f != "" {
			style = append(style, "color:"+f)
		}
		if g != "" {
			style = append(style, "background:"+g)
		}
		if bold {
			style = append(style, "font-weight:bold")
		}
		if faint {
			style = append(style, "opacity:0.65")
		}
		if len(style) > 0 {
			b.WriteString(`<span style="` + strings.Join(style, ";") + `">`)
			open = true
		}
		b.WriteString(html.EscapeString(text))
	}
	for _, m := range sgr.FindAllStringSubmatchIndex(capture, -1) {
		flush(capture[last:m[0]])
		last = m[1]
		for _, p := range strings.Split(capture[m[2]:m[3]], ";") {
			n, _ := strconv.Atoi(p) // "" is 0: reset
			switch {
			case n == 0:
				bold, faint, reverse, fg, bg = false, false, false, -1, -1
			case n == 1:
				bold = true
			case n == 2:
				faint = true
			case n == 7:
				reverse = true
			case n == 22:
				bold, faint = false, false
			case n == 27:
				reverse = false
			case n >= 30 && n <= 37:
				fg = n - 30
			case n == 39:
				fg = -1
			case n >= 40 && n <= 47:
				bg = n - 40
			case n == 49:
				bg = -1
			}
		}
	}
	flush(capture[last:])
	if open {
		b.WriteString("</span>")
	}
	b.WriteString("</pre></body></html>\n")
	return b.String()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// writeDocument replaces the tab's document by page (no file or server
// needed).
func writeDocument(page string) chromedp.Action[chromedp.Void] {
	js, _ := json.Marshal(page)
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool]("document.open(); document.write("+string(js)+"); document.close(); true")(ctx, tg)
		return err
	})
}
