package engine_test

import (
	"testing"

	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/history"
)

// The end-of-stage events carry the digest of the stage's log, the one the
// run records: a run in progress can show the log of a finished stage.
func TestEventsCarryLog(t *testing.T) {
	w := newWorkspace(t, `name: p
params: {code: "0"}
stages:
  a:
    outputs: {out: a.txt}
    run: echo making a; echo a > {{outputs.out}}
  b:
    inputs: {i: a.out}
    run: echo b says ${params.code}; exit ${params.code}
`, engine.Options{})
	for _, tc := range []struct {
		code string
		want map[string]string // stage → event type
	}{
		{"0", map[string]string{"a": engine.EvRan, "b": engine.EvRan}},
		{"3", map[string]string{"a": engine.EvHit, "b": engine.EvFailed}},
	} {
		ev := &events{}
		res, err := w.e.Run(t.Context(), w.load(map[string]string{"code": tc.code}), engine.RunOptions{Jobs: 1, Events: ev.add})
		if err != nil {
			t.Fatal(err)
		}
		logs := map[string]string{}
		for _, st := range res.Run.Stages {
			if st.Log == "" {
				t.Fatalf("code %s: stage %s (%s) has no log", tc.code, st.Name, st.Status)
			}
			logs[st.Name] = st.Log
		}
		seen := map[string]string{}
		for _, e := range ev.all {
			if e.Type == engine.EvHit || e.Type == engine.EvRan || e.Type == engine.EvFailed {
				seen[e.Stage] = e.Type
				if e.Log.String() != logs[e.Stage] {
					t.Errorf("code %s: %s event of %s has log %s, the run records %s", tc.code, e.Type, e.Stage, e.Log, logs[e.Stage])
				}
			}
		}
		for st, typ := range tc.want {
			if seen[st] != typ {
				t.Errorf("code %s: stage %s ended with %q, want %q", tc.code, st, seen[st], typ)
			}
		}
		if tc.code != "0" && res.Run.Status != history.RunFailed {
			t.Errorf("code %s: run %s", tc.code, res.Run.Status)
		}
	}
}
