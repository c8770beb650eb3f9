package pipeline

import (
	"strings"
	"testing"
	"time"
)

func mustSchedule(t *testing.T, body string) *Schedule {
	t.Helper()
	p := parse(t, "name: s\nparams: {date: x, hour: x}\n"+body+"\nstages:\n  a: {run: \"true\"}\n", nil)
	if p.Schedule == nil {
		t.Fatal("no schedule")
	}
	return p.Schedule
}

func fmtTicks(ts []time.Time) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Format(time.RFC3339))
	}
	return strings.Join(s, " ")
}

func TestScheduleDefaultsAndParams(t *testing.T) {
	s := mustSchedule(t, `schedule:
  cron: "0 2 * * *"
  params: {date: "{{tick.date}}", hour: "h{{ tick.hour }}"}`)
	if s.Timezone != "UTC" || s.Catchup != CatchupLatest || s.Overlap != OverlapSkip || s.MaxActiveRuns != 1 || s.CatchupWindow != 0 {
		t.Errorf("defaults: %+v", s)
	}
	got := s.TickParams(time.Date(2026, 3, 4, 2, 0, 0, 0, time.UTC))
	if got["date"] != "2026-03-04" || got["hour"] != "h02" {
		t.Errorf("TickParams = %v", got)
	}
	// The shorthand, and a list with seconds and descriptors.
	if s := mustSchedule(t, `schedule: "@hourly"`); s.Cron[0] != "@hourly" {
		t.Errorf("shorthand: %v", s.Cron)
	}
	s = mustSchedule(t, "schedule:\n  cron: [\"*/20 * * * * *\", \"@daily\"]")
	from := time.Date(2026, 1, 1, 23, 59, 10, 0, time.UTC)
	if got, want := fmtTicks(s.NextN(from, 4)), "2026-01-01T23:59:20Z 2026-01-01T23:59:40Z 2026-01-02T00:00:00Z 2026-01-02T00:00:20Z"; got != want {
		t.Errorf("ticks %s, want %s", got, want)
	}
}

// A DST change neither skips nor doubles a run: a daily job in the gap of
// spring-forward runs at the jump; in the repeated hour of fall-back it runs
// once; an hourly job has no duplicate instants.
func TestScheduleDST(t *testing.T) {
	for _, tc := range []struct {
		name, cron string
		from       string
		n          int
		want       string
	}{
		{"spring daily in the gap", "30 2 * * *", "2026-03-28T12:00:00+01:00", 3,
			"2026-03-29T03:00:00+02:00 2026-03-30T02:30:00+02:00 2026-03-31T02:30:00+02:00"},
		{"fall daily in the repeated hour", "30 2 * * *", "2026-10-24T12:00:00+02:00", 3,
			"2026-10-25T02:30:00+02:00 2026-10-26T02:30:00+01:00 2026-10-27T02:30:00+01:00"},
		{"spring hourly", "0 * * * *", "2026-03-29T00:30:00+01:00", 4,
			"2026-03-29T01:00:00+01:00 2026-03-29T03:00:00+02:00 2026-03-29T04:00:00+02:00 2026-03-29T05:00:00+02:00"},
		{"fall hourly", "0 * * * *", "2026-10-25T00:30:00+02:00", 4,
			"2026-10-25T01:00:00+02:00 2026-10-25T02:00:00+02:00 2026-10-25T03:00:00+01:00 2026-10-25T04:00:00+01:00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustSchedule(t, "schedule: {cron: \""+tc.cron+"\", timezone: Europe/Berlin}")
			from, err := time.Parse(time.RFC3339, tc.from)
			if err != nil {
				t.Fatal(err)
			}
			ticks := s.NextN(from, tc.n)
			got := make([]string, len(ticks))
			for i, tk := range ticks {
				got[i] = tk.In(s.Location).Format(time.RFC3339)
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Errorf("\n got %s\nwant %s", g, tc.want)
			}
			for i := 1; i < len(ticks); i++ {
				if !ticks[i].After(ticks[i-1]) {
					t.Errorf("ticks not strictly increasing: %v", got)
				}
			}
		})
	}
}

func TestParseOnFailure(t *testing.T) {
	p := parse(t, "name: s\non_failure: {command: ./notify.sh, webhook: \"http://127.0.0.1:9/hook\", timeout: 5s}\nstages:\n  a: {run: \"true\"}\n", nil)
	if o := p.OnFailure; o == nil || o.Command != "./notify.sh" || o.Webhook != "http://127.0.0.1:9/hook" || o.Timeout != 5*time.Second {
		t.Errorf("on_failure = %+v", p.OnFailure)
	}
}
