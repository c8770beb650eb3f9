package web

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"

	"github.com/orch-dev/orch/pkg/history"
)

// Pending is how the page names a stage of a running run that has not
// started yet (history records it with an empty status).
const Pending = "pending"

// stageStatuses are the stage statuses in legend order.
var stageStatuses = []string{history.Hit, history.Ran, history.Running, Pending, history.Failed, history.Skipped, history.Cancelled}

// palette is the one place the status colours are defined: the stylesheet
// gets them as CSS variables (paletteCSS), the SVG nodes use them, and the
// browser test looks for these pixels. Each has a contrast of at least
// 4.5:1 with white text (WCAG AA), and every use carries a text label too.
var palette = map[string]string{
	history.Hit:          "#0969da", // blue: restored from the cache
	history.Ran:          "#1a7f37", // green
	history.Running:      "#9a6700", // amber
	Pending:              "#6e7781", // grey, drawn dashed
	history.Failed:       "#cf222e", // red
	history.Skipped:      "#57606a", // dark grey, drawn dashed
	history.Cancelled:    "#8250df", // purple
	history.RunSucceeded: "#1a7f37",
}

// StatusColor returns the colour ("#rrggbb") the page gives a stage status
// (history.Hit, history.Ran, ..., Pending) or run status
// (history.RunSucceeded, ...): the solid fill of the status badges and of
// each DAG node's status bar. "" for an unknown status.
func StatusColor(status string) string { return palette[status] }

// paletteCSS is the status colours as CSS custom properties.
func paletteCSS() template.CSS {
	var b strings.Builder
	b.WriteString(":root{")
	for _, s := range append(stageStatuses, history.RunSucceeded) {
		fmt.Fprintf(&b, "--st-%s:%s;", s, palette[s])
	}
	b.WriteString("}")
	return template.CSS(b.String())
}

// stageStatus names a stage status for the page.
func stageStatus(s string) string {
	if s == "" {
		return Pending
	}
	return s
}

var labels = map[string]string{
	history.Hit: "HIT", history.Ran: "RAN", history.Running: "RUNNING", Pending: "PENDING",
	history.Failed: "FAILED", history.Skipped: "SKIPPED", history.Cancelled: "CANCELLED",
	history.RunSucceeded: "SUCCEEDED",
}

// statusLabel is the text that goes with a status colour.
func statusLabel(s string) string {
	if l, ok := labels[stageStatus(s)]; ok {
		return l
	}
	return strings.ToUpper(s)
}

func runURL(id string) string { return "/runs/" + url.PathEscape(id) }

func logURL(id, stage string) string {
	return runURL(id) + "/stages/" + url.PathEscape(stage) + "/log"
}

func shortKey(k string) string {
	if len(k) > 12 {
		return k[:12]
	}
	return k
}

// fmtDuration renders a duration for people: "0.4s", "12.3s", "3m 04s",
// "2h 05m", "3d 4h".
func fmtDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Millisecond:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}

// ago renders t relative to now: "3m ago", "in 2h 05m", "just now".
func (s *server) ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := s.now().Sub(t)
	switch {
	case d > -time.Second && d < 5*time.Second:
		return "just now"
	case d < 0:
		return "in " + roundDur(-d)
	}
	return roundDur(d) + " ago"
}

// roundDur is fmtDuration without sub-second detail.
func roundDur(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	return fmtDuration(d)
}

// fmtWhen renders a next run time: "Mon 23 Nov 02:00 UTC", with seconds
// if secs (a schedule with a seconds field).
func fmtWhen(t time.Time, secs bool) string {
	if secs {
		return t.Format("Mon 2 Jan 15:04:05 MST")
	}
	return t.Format("Mon 2 Jan 15:04 MST")
}

// anySeconds reports whether a time of ts is not on a whole minute.
func anySeconds(ts []time.Time) bool {
	for _, t := range ts {
		if t.Second() != 0 || t.Nanosecond() != 0 {
			return true
		}
	}
	return false
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.Format("2006-01-02 15:04:05 MST")
}

// runDuration is how long a run took, or has taken so far.
func (s *server) runDuration(r *history.Run) time.Duration {
	if r.Ended.IsZero() {
		return s.now().Sub(r.Started)
	}
	return r.Ended.Sub(r.Started)
}

// count is how many stages of a run have one status.
type count struct {
	Status string
	N      int
}

// stageCounts counts a run's stages by status, in legend order, non-zero
// counts only.
func stageCounts(r *history.Run) []count {
	n := map[string]int{}
	for _, st := range r.Stages {
		n[stageStatus(st.Status)]++
	}
	var out []count
	for _, s := range stageStatuses {
		if n[s] > 0 {
			out = append(out, count{s, n[s]})
		}
	}
	return out
}
