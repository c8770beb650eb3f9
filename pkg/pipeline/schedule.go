package pipeline

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // timezone: works in a static binary on a system without zoneinfo

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"github.com/orch-dev/orch/pkg/stages"
)

// Catch-up policies: what serve does with ticks missed while it was down.
const (
	CatchupNone   = "none"   // record them as skipped
	CatchupLatest = "latest" // run the newest, skip the rest
	CatchupAll    = "all"    // run every one, oldest first
)

// Overlap policies: what a tick does while max_active_runs runs are active.
const (
	OverlapSkip   = "skip"   // the tick is recorded as skipped
	OverlapQueue  = "queue"  // the tick waits for a free slot
	OverlapCancel = "cancel" // the oldest active run is cancelled; the tick runs after it
)

// Schedule is a pipeline's `schedule:` section.
type Schedule struct {
	// Cron holds the expressions as written ("0 2 * * *", "@daily").
	Cron []string
	// Timezone is the zone name as written ("UTC" by default); Location
	// is it loaded.
	Timezone      string
	Location      *time.Location
	Catchup       string
	CatchupWindow time.Duration // 0: no limit
	Overlap       string
	MaxActiveRuns int
	// Params are pipeline param overrides per tick, with {{tick.*}}
	// templates unexpanded; see TickParams.
	Params map[string]string

	specs []*cron.SpecSchedule
}

var (
	scheduleKeys  = []string{"cron", "timezone", "catchup", "catchup_window", "overlap", "max_active_runs", "params"}
	onFailureKeys = []string{"command", "webhook", "timeout"}
	tickRE        = regexp.MustCompile(`\{\{\s*tick\.([A-Za-z_]*)\s*\}\}`)
	// tickFields are the {{tick.NAME}} templates, formatted in the
	// schedule's timezone.
	tickFields = map[string]func(t time.Time) string{
		"date":      func(t time.Time) string { return t.Format("2006-01-02") },
		"time":      func(t time.Time) string { return t.Format("15:04:05") },
		"timestamp": func(t time.Time) string { return t.Format(time.RFC3339) },
		"unix":      func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) },
		"year":      func(t time.Time) string { return t.Format("2006") },
		"month":     func(t time.Time) string { return t.Format("01") },
		"day":       func(t time.Time) string { return t.Format("02") },
		"hour":      func(t time.Time) string { return t.Format("15") },
		"minute":    func(t time.Time) string { return t.Format("04") },
	}
	// cronParser accepts standard 5-field expressions, 6 fields with
	// seconds first, and descriptors (@daily, @hourly, ...).
	cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
)

// ParseCron parses one cron expression as the schedule section accepts it.
func ParseCron(expr string) (*cron.SpecSchedule, error) {
	expr = strings.TrimSpace(expr)
	switch {
	case expr == "":
		return nil, fmt.Errorf("empty cron expression")
	case strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ="):
		return nil, fmt.Errorf("%q: set the zone with timezone:, not %s", expr, strings.Fields(expr)[0])
	case strings.HasPrefix(expr, "@every"):
		return nil, fmt.Errorf("%q: @every is not supported; use a cron expression (\"*/5 * * * *\")", expr)
	}
	s, err := cronParser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%q: %v (want 5 fields \"MIN HOUR DOM MON DOW\", 6 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly)", expr, err)
	}
	spec, ok := s.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("unsupported schedule %q", expr)
	}
	// Fields are matched against wall-clock time computed here (Next),
	// never against robfig's own zone handling.
	spec.Location = time.UTC
	if spec.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return nil, fmt.Errorf("%q never fires (no such date)", expr)
	}
	return spec, nil
}

// Next returns the first tick strictly after t, in the schedule's zone, or
// the zero time if there is none.
//
// Ticks are wall-clock times: each matching wall-clock time fires once.
// When clocks spring forward, a wall time inside the gap fires at the
// moment of the jump (a daily 02:30 job still runs, at 03:00); when they
// fall back, a wall time that occurs twice fires at its first occurrence
// only. A DST change therefore neither skips nor doubles a daily run.
func (s *Schedule) Next(t time.Time) time.Time {
	var best time.Time
	for _, spec := range s.specs {
		if n := nextWall(spec, t, s.Location); !n.IsZero() && (best.IsZero() || n.Before(best)) {
			best = n
		}
	}
	return best
}

// NextN returns the next n ticks after t.
func (s *Schedule) NextN(t time.Time, n int) []time.Time {
	var out []time.Time
	for len(out) < n {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

// wall is t's wall-clock reading in loc, as a UTC time (no DST).
func wall(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), 0, time.UTC)
}

func nextWall(spec *cron.SpecSchedule, t time.Time, loc *time.Location) time.Time {
	// Start one second early so a wall time equal to t's (the tick that
	// a gap moved onto this very instant) is considered, then keep only
	// instants after t.
	w := wall(t, loc).Add(-time.Second)
	// Enough tries to step a per-second schedule through the hour a
	// fall-back repeats (3,600 wall times that map to earlier instants).
	for range 4000 {
		w = spec.Next(w)
		if w.IsZero() {
			return w
		}
		if inst := instant(w, loc); inst.After(t) {
			return inst
		}
	}
	return time.Time{}
}

// instant maps wall-clock w (as UTC) to the first instant showing it in
// loc, or, inside a spring-forward gap, to the moment of the jump.
func instant(w time.Time, loc *time.Location) time.Time {
	var found, hi time.Time
	for _, probe := range []time.Duration{-24 * time.Hour, 24 * time.Hour} {
		off := offsetAt(w.Add(probe), loc)
		c := w.Add(-time.Duration(off) * time.Second)
		if wall(c, loc).Equal(w) && (found.IsZero() || c.Before(found)) {
			found = c
		}
		if c.After(hi) {
			hi = c
		}
	}
	if !found.IsZero() {
		return found
	}
	// A gap: the zone in effect after it starts at the jump.
	start, _ := hi.In(loc).ZoneBounds()
	return start
}

// offsetAt is loc's UTC offset, in seconds, around wall-clock time w.
func offsetAt(w time.Time, loc *time.Location) int {
	_, off := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, loc).Zone()
	return off
}

// TickParams expands the schedule's params for a tick: {{tick.date}},
// {{tick.time}}, {{tick.timestamp}}, {{tick.unix}}, {{tick.year}},
// {{tick.month}}, {{tick.day}}, {{tick.hour}}, {{tick.minute}}, in the
// schedule's timezone.
func (s *Schedule) TickParams(tick time.Time) map[string]string {
	if len(s.Params) == 0 {
		return nil
	}
	t := tick.In(s.Location)
	out := make(map[string]string, len(s.Params))
	for k, v := range s.Params {
		out[k] = tickRE.ReplaceAllStringFunc(v, func(m string) string {
			return tickFields[tickRE.FindStringSubmatch(m)[1]](t)
		})
	}
	return out
}

// ID identifies the schedule's timing (expressions and zone): serve does
// not catch up ticks of a schedule that changed while it was down.
func (s *Schedule) ID() string {
	return strings.Join(s.Cron, "|") + "@" + s.Timezone
}

// schedule reads the `schedule:` section; pp are the pipeline params,
// which schedule params must name.
func (l *loader) schedule(n *yaml.Node, pp map[string]stages.Param) *Schedule {
	s := &Schedule{Timezone: "UTC", Location: time.UTC, Catchup: CatchupLatest, Overlap: OverlapSkip, MaxActiveRuns: 1}
	var cronNode *yaml.Node
	if r := resolve(n); r.Kind == yaml.ScalarNode && r.Tag != "!!null" {
		// schedule: "0 2 * * *" is short for schedule: {cron: "0 2 * * *"}.
		n, cronNode = nil, n
	}
	fields := n
	if fields == nil {
		fields = &yaml.Node{Kind: yaml.MappingNode}
	}
	l.mapping(fields, "schedule", scheduleKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "cron":
			cronNode = v
		case "timezone":
			if tz, ok := l.str(v, "schedule.timezone"); ok {
				loc, err := time.LoadLocation(tz)
				if err != nil || tz == "" || tz == "Local" {
					l.errAt(v, "schedule.timezone: unknown time zone %q (use an IANA name such as Europe/Berlin or UTC)", tz)
					return
				}
				s.Timezone, s.Location = tz, loc
			}
		case "catchup":
			s.Catchup = l.oneOf(v, "schedule.catchup", CatchupNone, CatchupLatest, CatchupAll)
		case "overlap":
			s.Overlap = l.oneOf(v, "schedule.overlap", OverlapSkip, OverlapQueue, OverlapCancel)
		case "catchup_window":
			if str, ok := l.str(v, "schedule.catchup_window"); ok {
				d, err := time.ParseDuration(str)
				if err != nil || d <= 0 {
					l.errAt(v, "schedule.catchup_window: %q is not a positive duration (e.g. 72h)", str)
					return
				}
				s.CatchupWindow = d
			}
		case "max_active_runs":
			if str, ok := l.str(v, "schedule.max_active_runs"); ok {
				m, err := strconv.Atoi(str)
				if err != nil || m < 1 {
					l.errAt(v, "schedule.max_active_runs must be a whole number of at least 1, got %q", str)
					return
				}
				s.MaxActiveRuns = m
			}
		case "params":
			s.Params = map[string]string{}
			l.mapping(v, "schedule.params", nil, func(name string, k, v *yaml.Node) {
				if _, ok := pp[name]; !ok {
					l.errAt(k, "schedule.params: the pipeline has no param %q%s (declare it under params:)", name, l.didYouMean(name, sortedKeys(pp)))
					return
				}
				text, ok := l.str(v, "schedule.params."+name)
				if !ok {
					return
				}
				for _, m := range tickRE.FindAllStringSubmatch(text, -1) {
					if _, ok := tickFields[m[1]]; !ok {
						var known []string
						for _, f := range sortedKeys(tickFields) {
							known = append(known, "tick."+f)
						}
						l.errAt(v, "schedule.params.%s: unknown template %s%s (known: %s)", name, m[0], l.didYouMean("tick."+m[1], known), strings.Join(known, ", "))
					}
				}
				s.Params[name] = text
			})
		}
	})
	if cronNode == nil {
		if n != nil && resolve(n).Kind == yaml.MappingNode {
			l.errAt(n, "schedule: missing required key \"cron\"")
		}
		return nil
	}
	exprs := l.strList(cronNode, "schedule.cron")
	if len(exprs) == 0 {
		l.errAt(cronNode, "schedule.cron: no cron expression")
	}
	for _, e := range exprs {
		spec, err := ParseCron(e.Value)
		if err != nil {
			l.errAt(e, "schedule.cron: %v", err)
			continue
		}
		s.Cron = append(s.Cron, e.Value)
		s.specs = append(s.specs, spec)
	}
	return s
}

func (l *loader) oneOf(n *yaml.Node, what string, allowed ...string) string {
	s, ok := l.str(n, what)
	if !ok {
		return allowed[0]
	}
	if !contains(allowed, s) {
		l.errAt(n, "%s must be one of %s, got %q%s", what, strings.Join(allowed, ", "), s, l.didYouMean(s, allowed))
		return allowed[0]
	}
	return s
}

// OnFailure is a pipeline's `on_failure:` section: who hears about a
// failed run. Both get the run summary as JSON.
type OnFailure struct {
	// Command runs through `sh -c` in the workspace root with the summary
	// on stdin and ORCH_RUN_ID, ORCH_PIPELINE, ORCH_RUN_STATUS set.
	Command string
	// Webhook receives the summary in a POST (Content-Type
	// application/json).
	Webhook string
	// Timeout bounds each of them (default 30s).
	Timeout time.Duration
}

func (l *loader) onFailure(n *yaml.Node) *OnFailure {
	o := &OnFailure{Timeout: 30 * time.Second}
	given := false
	l.mapping(n, "on_failure", onFailureKeys, func(key string, k, v *yaml.Node) {
		given = given || key != "timeout"
		s, ok := l.str(v, "on_failure."+key)
		if !ok {
			return
		}
		switch key {
		case "command":
			o.Command = s
		case "webhook":
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				l.errAt(v, "on_failure.webhook: %q is not an http:// or https:// URL", s)
				return
			}
			o.Webhook = s
		case "timeout":
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				l.errAt(v, "on_failure.timeout: %q is not a positive duration (e.g. 30s)", s)
				return
			}
			o.Timeout = d
		}
	})
	if o.Command == "" && o.Webhook == "" {
		if r := resolve(n); r.Kind == yaml.MappingNode && !given {
			l.errAt(n, "on_failure needs a command: or a webhook: (or both)")
		}
		return nil
	}
	return o
}
