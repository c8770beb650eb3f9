package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/server/web"
	"github.com/orch-dev/orch/pkg/server/web/browsertest"
)

// browserNightly ticks every second; a trigger overriding greeting reruns
// greet and report, fetch stays a HIT.
const browserNightly = `name: nightly
description: Fetch rows & greet them
params: {greeting: hello}
schedule:
  cron: "* * * * * *"
  catchup: none
  overlap: skip
stages:
  fetch:
    run: echo "fetched 3 rows"; printf '1\n2\n3\n' > {{outputs.rows}}
    outputs: {rows: rows.txt}
  greet:
    run: echo "greeting=${params.greeting}"; echo "${params.greeting}" > {{outputs.g}}
    outputs: {g: g.txt}
  report:
    run: cat {{inputs.g}} {{inputs.rows}} > {{outputs.out}}; echo "report written"
    inputs: {rows: fetch.rows, g: greet.g}
    outputs: {out: report.txt}
`

// browserSlow is not scheduled; its stage wait blocks until the file
// RELEASE exists.
const browserSlow = `name: slow
stages:
  first:
    run: echo "first done"; echo first > {{outputs.o}}
    outputs: {o: o.txt}
    cache: false
  wait:
    run: touch STARTED; while [ ! -e RELEASE ]; do sleep 0.05; done; cat {{inputs.i}} > {{outputs.o}}
    inputs: {i: first.o}
    outputs: {o: o.txt}
    cache: false
  after:
    run: cat {{inputs.i}} > {{outputs.o}}
    inputs: {i: wait.o}
    outputs: {o: o.txt}
    cache: false
`

// TestServeBrowser is the web page end to end: the orch binary serves a
// workspace whose pipeline ticks every second; a run is triggered through
// the JSON API with a param override; then headless Chromium reads serve's
// own pages and checks them against the API: the pipelines and their next
// runs, the run history with the trigger, the run's DAG (edges drawn, nodes
// painted in their status colours), a stage's log, and a run in progress
// shown live until it finishes.
func TestServeBrowser(t *testing.T) {
	b := browsertest.Start(t, browsertest.Options{}) // skips without ORCH_TEST_CHROMEDRIVER
	s := startServe(t, map[string]string{"nightly.yaml": browserNightly, "slow.yaml": browserSlow})

	// A few ticks, all succeeded; the later ones all HIT.
	var ticks []*history.Run
	s.waitFor("three scheduled runs of nightly", func() bool {
		ticks = nil
		for _, r := range s.runs("pipeline=nightly&status=succeeded") {
			if r.Trigger == "schedule" {
				ticks = append(ticks, r)
			}
		}
		return len(ticks) >= 3
	})
	for _, r := range ticks[:len(ticks)-1] { // newest first: all but the first
		for _, st := range r.Stages {
			if st.Status != history.Hit {
				t.Errorf("scheduled run %s: stage %s is %q, want hit", r.ID, st.Name, st.Status)
			}
		}
	}

	// A scheduled run's page: its tick, every stage a HIT.
	b.Navigate(s.url + "/runs/" + ticks[0].ID)
	summary, _ := b.Find("dl.summary")
	if txt, _ := summary.Text(); !strings.Contains(txt, "schedule") || !strings.Contains(txt, ticks[0].Tick.UTC().Format("2006-01-02 15:04:05")) {
		t.Errorf("scheduled run summary lacks its trigger or tick %s:\n%s", ticks[0].Tick, txt)
	}
	s.checkDAG(b, ticks[0], [][2]string{{"fetch", "report"}, {"greet", "report"}})

	// Mutating calls need the token; with it, a trigger with an override.
	if code, body := s.call("POST", "/api/pipelines/nightly/runs", "", `{}`); code != http.StatusUnauthorized {
		t.Errorf("trigger without the token: %d %s", code, body)
	}
	id := s.trigger("nightly", `{"params": {"greeting": "bonjour"}}`)
	run := s.waitRun(id, history.RunSucceeded)
	want := map[string]string{"fetch": history.Hit, "greet": history.Ran, "report": history.Ran}
	if got := stageMap(run); !maps.Equal(got, want) {
		t.Fatalf("triggered run %s stages %v, want %v", id, got, want)
	}

	// The pipelines page: nightly with its schedule and next five runs,
	// one second apart and in the future; slow is not scheduled.
	b.Navigate(s.url + "/")
	card, _ := b.Find(`section[data-pipeline="nightly"]`)
	txt, _ := card.Text()
	for _, w := range []string{"* * * * * *", "Fetch rows & greet them", "fetch", "greet", "report"} {
		if !strings.Contains(txt, w) {
			t.Errorf("nightly card lacks %q:\n%s", w, txt)
		}
	}
	next, _ := b.FindAll(`section[data-pipeline="nightly"] ol.next time`)
	if len(next) != 5 {
		t.Fatalf("nightly card lists %d next runs, want 5", len(next))
	}
	var times []time.Time
	for _, el := range next {
		v, _ := el.Attr("datetime")
		tm, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t.Fatalf("next run datetime %q: %v", v, err)
		}
		times = append(times, tm)
	}
	for i, el := range next {
		if i > 0 && times[i].Sub(times[i-1]) != time.Second {
			t.Errorf("next runs %v: not 1s apart", times)
		}
		// A schedule with seconds shows them.
		if txt, _ := el.Text(); !strings.Contains(txt, times[i].Format("15:04:05")) {
			t.Errorf("next run %q, want %s", txt, times[i].Format("15:04:05"))
		}
	}
	if slow, _ := b.Find(`section[data-pipeline="slow"]`); slow != nil {
		if txt, _ := slow.Text(); !strings.Contains(txt, "not scheduled") {
			t.Errorf("slow card:\n%s", txt)
		}
	}
	saveServeShot(t, b, "serve-pipelines.png")

	// The run history: the page and the API list the same runs.
	b.Navigate(s.url + "/runs?pipeline=nightly&limit=10")
	row, _ := b.Find(fmt.Sprintf(`tr[data-run=%q][data-status="succeeded"]`, id))
	if txt, _ := row.Text(); !strings.Contains(txt, "manual") {
		t.Errorf("history row of the triggered run lacks its trigger: %q", txt)
	}
	s.samePageAndAPI(b, "nightly")

	// The triggered run's page: the trigger, the overridden param, the DAG
	// with its edges and its nodes in their status colours.
	link, _ := b.Find(fmt.Sprintf(`tr[data-run=%q] a[href="/runs/%s"]`, id, id))
	link.Click()
	if u, _ := b.URL(); u != s.url+"/runs/"+id {
		t.Fatalf("run link led to %s", u)
	}
	summary, _ = b.Find("dl.summary")
	if txt, _ := summary.Text(); !strings.Contains(txt, "manual") {
		t.Errorf("run summary lacks the trigger: %q", txt)
	}
	params, _ := b.Find("details.params summary")
	params.Click() // open the parameters
	kv, _ := b.Find("details.params table")
	if txt, _ := kv.Text(); !strings.Contains(txt, "greeting bonjour") {
		t.Errorf("run parameters %q, want greeting bonjour", txt)
	}
	s.checkDAG(b, run, [][2]string{{"fetch", "report"}, {"greet", "report"}})
	saveServeShot(t, b, "serve-run.png")

	// A node leads to its stage's log: the page shows what the API serves.
	node, _ := b.Find(`svg#dag a.node[data-stage="greet"]`)
	node.Click()
	if u, _ := b.URL(); u != s.url+"/runs/"+id+"/stages/greet/log" {
		t.Fatalf("node link led to %s", u)
	}
	pre, _ := b.Find("pre#log")
	logTxt, _ := pre.Text()
	_, apiLog := s.call("GET", "/api/runs/"+id+"/stages/greet/log", "", "")
	if !strings.Contains(logTxt, "greeting=bonjour") || strings.TrimSpace(logTxt) != strings.TrimSpace(apiLog) {
		t.Errorf("log page %q, API %q, want greeting=bonjour in both", logTxt, apiLog)
	}

	// A run in progress: shown running, live, and followed to its end.
	slowID := s.trigger("slow", "")
	s.waitFile("STARTED")
	live := s.run(slowID)
	if got, want := stageMap(live), map[string]string{"first": history.Ran, "wait": history.Running, "after": ""}; live.Status != history.RunRunning || !maps.Equal(got, want) {
		t.Fatalf("API: run %s %s stages %v, want running %v", slowID, live.Status, got, want)
	}
	b.Navigate(s.url + "/runs?pipeline=slow")
	b.Find(fmt.Sprintf(`tr[data-run=%q][data-status="running"]`, slowID))
	b.Navigate(s.url + "/runs/" + slowID)
	if el, _ := b.FindAll(".live"); len(el) != 1 {
		t.Error("no live indicator on a run in progress")
	}
	s.checkDAG(b, live, [][2]string{{"first", "wait"}, {"wait", "after"}})
	saveServeShot(t, b, "serve-run-live.png")
	// The log of a stage that finished while the run goes on.
	b.Navigate(s.url + "/runs/" + slowID + "/stages/first/log")
	if pre, _ := b.Find("pre#log"); pre != nil {
		if txt, _ := pre.Text(); !strings.Contains(txt, "first done") {
			t.Errorf("log of finished stage first of a running run: %q", txt)
		}
	}

	// Finish it: the page, left alone, reloads itself until it shows the end.
	b.Navigate(s.url + "/runs/" + slowID)
	if err := os.WriteFile(filepath.Join(s.dir, "RELEASE"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	done := s.waitRun(slowID, history.RunSucceeded)
	s.waitFor("the run page to show the run finished", func() bool {
		n, _ := b.FindAll(`svg#dag a.node[data-stage="after"][data-status="ran"]`)
		return len(n) == 1
	})
	if el, _ := b.FindAll(".live"); len(el) != 0 {
		t.Error("finished run still shown live")
	}
	s.checkDAG(b, done, [][2]string{{"first", "wait"}, {"wait", "after"}})
	s.samePageAndAPI(b, "")
}

// served is an orch serve process started by a test.
type served struct {
	t     *testing.T
	dir   string // the workspace
	url   string // http://host:port
	token string
}

// startServe writes the pipelines into a new workspace and starts the orch
// binary serving it on a free loopback port with ORCH_TOKEN set; it is
// stopped with SIGINT at cleanup, and its log is shown if the test fails.
func startServe(t *testing.T, pipelines map[string]string) *served {
	t.Helper()
	orch, err := exec.LookPath("orch") // this test binary as orch (TestMain)
	if err != nil {
		t.Fatal(err)
	}
	s := &served{t: t, dir: t.TempDir(), token: "e2e-secret"}
	if err := os.Mkdir(filepath.Join(s.dir, "pipelines"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, y := range pipelines {
		if err := os.WriteFile(filepath.Join(s.dir, "pipelines", name), []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(s.dir, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(orch, "serve", "--addr", "127.0.0.1:0", "--addr-file", "addr", "--poll", "200ms", "--grace", "10s")
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains([]string{"ORCH_CACHE_DIR", "ORCH_REMOTE", "ORCH_TOKEN", "GORACE"}, k) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "ORCH_TOKEN="+s.token, "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("orch serve: %v", err)
			}
		case <-time.After(waitLimit):
			_ = cmd.Process.Kill()
			t.Errorf("orch serve did not stop within %s of SIGINT", waitLimit)
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("orch serve log:\n%s", b)
		}
	})
	s.waitFile("addr")
	addr, err := os.ReadFile(filepath.Join(s.dir, "addr"))
	if err != nil {
		t.Fatal(err)
	}
	s.url = "http://" + strings.TrimSpace(string(addr))
	return s
}

// waitFor polls cond until it holds, at most waitLimit.
func (s *served) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("waited %s for %s", waitLimit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *served) waitFile(name string) {
	s.t.Helper()
	s.waitFor(name+" to appear", func() bool {
		_, err := os.Stat(filepath.Join(s.dir, name))
		return err == nil
	})
}

// call sends one API request (with the token if token is set) and returns
// the status and body.
func (s *served) call(method, path, token, body string) (int, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: waitLimit}
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// get GETs an API path that must answer 200 and decodes its JSON into v.
func (s *served) get(path string, v any) {
	s.t.Helper()
	code, body := s.call("GET", path, "", "")
	if code != http.StatusOK {
		s.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		s.t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

func (s *served) runs(query string) []*history.Run {
	s.t.Helper()
	var runs []*history.Run
	s.get("/api/runs?"+query, &runs)
	return runs
}

func (s *served) run(id string) *history.Run {
	s.t.Helper()
	var r history.Run
	s.get("/api/runs/"+id, &r)
	return &r
}

// trigger starts a run of pipeline through the API and returns its ID.
func (s *served) trigger(pipeline, body string) string {
	s.t.Helper()
	code, resp := s.call("POST", "/api/pipelines/"+pipeline+"/runs", s.token, body)
	var out struct{ ID string }
	if code != http.StatusCreated || json.Unmarshal([]byte(resp), &out) != nil || out.ID == "" {
		s.t.Fatalf("trigger %s: %d %s", pipeline, code, resp)
	}
	return out.ID
}

// waitRun waits until run id has finished and checks its status.
func (s *served) waitRun(id, status string) *history.Run {
	s.t.Helper()
	var r *history.Run
	s.waitFor("run "+id+" to finish", func() bool {
		r = s.run(id)
		return r.Status != history.RunRunning
	})
	if r.Status != status {
		s.t.Fatalf("run %s is %s (%s), want %s", id, r.Status, r.Error, status)
	}
	return r
}

// samePageAndAPI checks that the run history page of pipeline ("": all)
// lists the runs the API lists, in the same order, with the same statuses.
// Runs go on meanwhile: the API, asked after the page, may list newer runs
// first, and a run the page showed running may have finished since.
func (s *served) samePageAndAPI(b *browsertest.Browser, pipeline string) {
	s.t.Helper()
	b.Navigate(s.url + "/runs?limit=200&pipeline=" + pipeline)
	rows, _ := b.FindAll("tr[data-run]")
	if len(rows) == 0 {
		s.t.Fatalf("the history of %q lists no runs", pipeline)
	}
	api := s.runs("limit=100000&pipeline=" + pipeline)
	first, _ := rows[0].Attr("data-run")
	i := slices.IndexFunc(api, func(r *history.Run) bool { return r.ID == first })
	if i < 0 {
		s.t.Fatalf("the page lists run %s first; the API does not list it", first)
	}
	for _, row := range rows {
		id, _ := row.Attr("data-run")
		status, _ := row.Attr("data-status")
		if i >= len(api) || api[i].ID != id {
			s.t.Fatalf("the page lists run %s where the API has %v", id, idsFrom(api, i))
		}
		if status != api[i].Status && status != history.RunRunning {
			s.t.Errorf("run %s: page says %s, API says %s", id, status, api[i].Status)
		}
		i++
	}
}

func idsFrom(runs []*history.Run, i int) []string {
	var ids []string
	for _, r := range runs[min(i, len(runs)):] {
		ids = append(ids, r.ID)
	}
	return ids
}

// checkDAG checks the current run page against run as the API reported
// it: one node per stage with its status, the edges, and, in a screenshot
// of the graph, each node painted in its status colour.
func (s *served) checkDAG(b *browsertest.Browser, run *history.Run, edges [][2]string) {
	s.t.Helper()
	svg, _ := b.Find("svg#dag")
	img, _, _ := svg.Screenshot()
	svgBox, _ := svg.Rect()
	nodes, _ := b.FindAll("svg#dag a.node")
	want := stageMap(run)
	if len(nodes) != len(want) {
		s.t.Fatalf("run %s: %d nodes drawn, want %d", run.ID, len(nodes), len(want))
	}
	for _, n := range nodes {
		name, _ := n.Attr("data-stage")
		status, _ := n.Attr("data-status")
		st, ok := want[name]
		if !ok {
			s.t.Errorf("run %s: node %q is not a stage", run.ID, name)
			continue
		}
		if st == "" {
			st = web.Pending
		}
		if status != st {
			s.t.Errorf("run %s: node %s is %s, the API says %s", run.ID, name, status, st)
		}
		box, _ := n.Rect()
		box = box.Sub(svgBox.Min).Add(img.Bounds().Min)
		if got := browsertest.CountColor(img, box, browsertest.Hex(web.StatusColor(st)), 6); got < 300 {
			s.t.Errorf("run %s: node %s (%s): %d pixels of %s, want ≥ 300", run.ID, name, st, got, web.StatusColor(st))
		}
	}
	drawn, _ := b.FindAll("svg#dag path.edge")
	var got [][2]string
	for _, e := range drawn {
		from, _ := e.Attr("data-from")
		to, _ := e.Attr("data-to")
		got = append(got, [2]string{from, to})
	}
	slices.SortFunc(got, func(a, b [2]string) int { return strings.Compare(a[0]+"\x00"+a[1], b[0]+"\x00"+b[1]) })
	if !slices.Equal(got, edges) {
		s.t.Errorf("run %s: edges %v, want %v", run.ID, got, edges)
	}
}

func stageMap(r *history.Run) map[string]string {
	m := map[string]string{}
	for _, st := range r.Stages {
		m[st.Name] = st.Status
	}
	return m
}

// saveServeShot writes a screenshot of the page to $ORCH_TEST_SCREENSHOTS
// when that is set.
func saveServeShot(t *testing.T, b *browsertest.Browser, name string) {
	dir := os.Getenv("ORCH_TEST_SCREENSHOTS")
	if dir == "" {
		return
	}
	_, png, _ := b.Screenshot()
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Error(err)
	}
}
