package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
)

func kinds() *stages.Registry {
	r := stages.NewRegistry()
	r.Register("exec", stages.NewExec(time.Second))
	return r
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:0": true, "[::1]:80": true, "127.1.2.3:1": true,
		"0.0.0.0:8080": false, ":8080": false, "192.168.1.2:80": false, "example.com:80": false, "nonsense": false,
	} {
		if err := checkLoopback(addr); (err == nil) != ok {
			t.Errorf("checkLoopback(%q) = %v", addr, err)
		}
	}
	if _, err := New(Options{Root: t.TempDir(), Addr: "0.0.0.0:1", Args: []string{"."}}); err == nil || !strings.Contains(err.Error(), "ORCH_TOKEN") {
		t.Errorf("New on 0.0.0.0 without a token: %v", err)
	}
	if _, err := New(Options{Root: t.TempDir(), Addr: "0.0.0.0:1", Token: "x", Args: []string{"."}}); err != nil {
		t.Errorf("New on 0.0.0.0 with a token: %v", err)
	}
}

// A file that stops parsing keeps its last good version; the error is
// reported once; fixing it loads the new version.
func TestCatalogKeepsLastGood(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "pipelines")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "a.yaml")
	write := func(s string, mod time.Time) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	c := &catalog{root: root, args: []string{"pipelines"}, kinds: kinds()}
	t0 := time.Now().Add(-time.Hour)
	write("name: a\nstages: {s: {run: \"echo 1\"}}\n", t0)
	if ch, err := c.reload(); err != nil || len(ch) != 1 || !ch[0].loaded {
		t.Fatalf("first load: %+v, %v", ch, err)
	}
	write("name: a\nstages: {s: {run: [}}\n", t0.Add(time.Second))
	ch, _ := c.reload()
	if len(ch) != 1 || ch[0].loaded || ch[0].name != "a" || !strings.Contains(ch[0].err, "a.yaml:2:1: invalid YAML") {
		t.Fatalf("broken edit: %+v", ch)
	}
	if ch, _ := c.reload(); len(ch) != 0 {
		t.Errorf("unchanged broken file reported again: %+v", ch)
	}
	l, ok := c.get("a")
	if !ok || l.p.Stages["s"].Run != "echo 1" || l.err == "" {
		t.Fatalf("last good version: %+v", l)
	}
	write("name: a\nstages: {s: {run: \"echo 2\"}}\n", t0.Add(2*time.Second))
	if ch, _ := c.reload(); len(ch) != 1 || !ch[0].loaded {
		t.Fatalf("fixed: %+v", ch)
	}
	if l, _ := c.get("a"); l.p.Stages["s"].Run != "echo 2" || l.err != "" {
		t.Errorf("after the fix: %q %q", l.p.Stages["s"].Run, l.err)
	}
	os.Remove(file)
	if ch, _ := c.reload(); len(ch) != 1 || !ch[0].removed {
		t.Errorf("removed: %+v", ch)
	}
	if _, ok := c.get("a"); ok {
		t.Error("a removed file's pipeline is still there")
	}
}

// on_failure: the command gets the summary on stdin and the run in its
// environment; the webhook gets it in a POST. A failing hook is counted.
func TestNotify(t *testing.T) {
	got := make(chan []byte, 1)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
		}
		got <- b
	}))
	defer hook.Close()
	root := t.TempDir()
	p := &pipeline.Pipeline{Name: "p", Root: root, OnFailure: &pipeline.OnFailure{
		Command: "cat > summary.json; echo $ORCH_PIPELINE $ORCH_RUN_ID $ORCH_RUN_STATUS > env.txt",
		Webhook: hook.URL, Timeout: 10 * time.Second,
	}}
	s := &Server{log: discard(), metrics: newMetrics()}
	run := &history.Run{ID: "r1", Pipeline: "p", Status: history.RunFailed, Error: "stage \"x\": exit status 1"}
	s.notify(context.Background(), p, run)
	b, err := os.ReadFile(filepath.Join(root, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sum map[string]any
	if err := json.Unmarshal(b, &sum); err != nil || sum["id"] != "r1" || sum["status"] != "failed" || !strings.Contains(sum["error"].(string), "exit status 1") {
		t.Errorf("command summary %s (%v)", b, err)
	}
	if env, _ := os.ReadFile(filepath.Join(root, "env.txt")); string(env) != "p r1 failed\n" {
		t.Errorf("command env %q", env)
	}
	select {
	case b := <-got:
		if !strings.Contains(string(b), `"id":"r1"`) {
			t.Errorf("webhook body %s", b)
		}
	default:
		t.Error("webhook not called")
	}
	// Failing hooks are counted, not fatal.
	p.OnFailure = &pipeline.OnFailure{Command: "exit 3", Webhook: hook.URL + "/x", Timeout: 10 * time.Second}
	hook.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", 500) })
	s.notify(context.Background(), p, run)
	if n := testCounter(t, s, "orch_notify_failures_total"); n != 2 {
		t.Errorf("notify failures counted %v, want 2", n)
	}
}

func testCounter(t *testing.T, s *Server, name string) float64 {
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}
