package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/orch-dev/orch/pkg/history"
)

//go:embed templates/*.html static/*
var files embed.FS

// Paging of the run history.
const (
	defaultPerPage = 25
	maxPerPage     = 200
	maxPage        = 1000
)

// logTail is how much of a stage log the log page shows; the full log is at
// its .txt address.
const logTail = 256 << 10

// refreshSeconds is how often a page showing a running run reloads itself.
const refreshSeconds = 2

// New returns the web page of `orch serve`, reading everything from src.
// It serves, for GET and HEAD:
//
//	/                                    the pipelines: schedule, next runs, last run, reload errors
//	/runs?pipeline=P&status=S&limit=N&page=K   the run history, newest first
//	/runs/{id}                           one run: its DAG and its stages
//	/runs/{id}/stages/{stage}/log        a stage's log (the last 256 KiB), escaped
//	/runs/{id}/stages/{stage}/log.txt    the log as text/plain (what Source.Log gives)
//	/static/...                          the stylesheet and icon
//
// Anything else is a 404 page. Mount it at "/" and give the JSON API and
// /metrics more specific patterns on the same http.ServeMux.
//
// Pages of a run in progress reload themselves (a meta refresh; no script).
// Hooks for tests, kept stable: section[data-pipeline=NAME] (a pipeline
// card), tr[data-run=ID][data-status=S] (a history row), svg#dag with
// a.node[data-stage=NAME][data-status=S] and path.edge[data-from][data-to]
// (the DAG; a node's status bar and pill are filled with StatusColor(S)),
// tr#stage-NAME (the stage table), pre#log (a log), .live (shown while the
// page refreshes itself).
func New(src Source) http.Handler {
	return newServer(src, time.Now)
}

type server struct {
	src   Source
	now   func() time.Time
	pages map[string]*template.Template
	mux   *http.ServeMux
}

func newServer(src Source, now func() time.Time) *server {
	s := &server{src: src, now: now, pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	funcs := template.FuncMap{
		"dur":      fmtDuration,
		"ago":      s.ago,
		"abstime":  fmtTime,
		"when":     fmtWhen,
		"secs":     anySeconds,
		"iso":      func(t time.Time) string { return t.Format(time.RFC3339) },
		"label":    statusLabel,
		"runURL":   runURL,
		"logURL":   logURL,
		"short":    shortKey,
		"runDur":   s.runDuration,
		"counts":   stageCounts,
		"statuses": func() []string { return runStatuses },
		"colors":   paletteCSS,
		"asset":    assetURL,
		"base":     filepath.Base,
	}
	base := template.Must(template.New("base.html").Funcs(funcs).ParseFS(files, "templates/base.html"))
	for _, p := range []string{"pipelines", "runs", "run", "log", "error"} {
		s.pages[p] = template.Must(template.Must(base.Clone()).ParseFS(files, "templates/"+p+".html"))
	}
	static, _ := fs.Sub(files, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", cacheFor(24*time.Hour, http.FileServerFS(static))))
	s.mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/favicon.svg", http.StatusMovedPermanently)
	})
	s.mux.HandleFunc("GET /{$}", s.pipelinesPage)
	s.mux.HandleFunc("GET /runs", s.runsPage)
	s.mux.HandleFunc("GET /runs/{id}", s.runPage)
	s.mux.HandleFunc("GET /runs/{id}/stages/{stage}/log", s.logPage)
	s.mux.HandleFunc("GET /runs/{id}/stages/{stage}/log.txt", s.logText)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			s.fail(w, r, http.StatusMethodNotAllowed, "Method not allowed", "This page only answers GET and HEAD.")
			return
		}
		s.fail(w, r, http.StatusNotFound, "Page not found", fmt.Sprintf("There is no page at %s.", r.URL.Path))
	})
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; script-src 'none'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "same-origin")
	s.mux.ServeHTTP(w, r)
}

// assetURL is the address of a static file with its content's digest as a
// query, so a browser may cache it long and still sees a new version.
func assetURL(name string) (string, error) {
	b, err := files.ReadFile("static/" + name)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return "/static/" + name + "?v=" + hex.EncodeToString(sum[:6]), nil
}

func cacheFor(d time.Duration, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", int(d.Seconds())))
		h.ServeHTTP(w, r)
	})
}

// page is what every template gets.
type page struct {
	Title string
	Nav   string // "pipelines" or "runs": the highlighted tab
	// Refresh, when > 0, reloads the page after that many seconds (a run
	// in progress).
	Refresh int
	Now     time.Time
	Data    any
}

// render executes a page into a buffer first, so a template error becomes a
// clean 500 rather than half a page.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.Now = s.now()
	var buf bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&buf, "base.html", p); err != nil {
		slog.Error("web: render", "page", name, "path", r.URL.Path, "err", err)
		http.Error(w, "internal error rendering "+name+" page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if p.Refresh > 0 {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

type errorData struct {
	Status  int
	Heading string
	Message string
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, status int, heading, msg string) {
	s.render(w, r, status, "error", page{Title: heading, Data: errorData{status, heading, msg}})
}

// sourceError answers a failed Source call: a 404 for history.ErrNotFound,
// a 400 for history.ErrAmbiguous, a 500 otherwise.
func (s *server) sourceError(w http.ResponseWriter, r *http.Request, heading string, err error) {
	switch {
	case errors.Is(err, history.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, heading, err.Error())
		return
	case errors.Is(err, history.ErrAmbiguous):
		s.fail(w, r, http.StatusBadRequest, "Ambiguous run ID", err.Error()+": give more of the ID.")
		return
	}
	slog.Error("web: source", "path", r.URL.Path, "err", err)
	s.fail(w, r, http.StatusInternalServerError, "Could not read the run history", err.Error())
}

// --- pipelines -------------------------------------------------------------

// pipelineView is a pipeline with the outcome of each of its stages in its
// last run.
type pipelineView struct {
	Pipeline
	Chips []stageChip
}

type stageChip struct{ Name, Status string }

func (s *server) pipelinesPage(w http.ResponseWriter, r *http.Request) {
	var ps []pipelineView
	refresh := 0
	for _, p := range s.src.Pipelines() {
		v := pipelineView{Pipeline: p}
		last := map[string]string{}
		if p.LastRun != nil {
			if p.LastRun.Status == history.RunRunning {
				refresh = 5
			}
			for _, st := range p.LastRun.Stages {
				last[st.Name] = stageStatus(st.Status)
			}
		}
		for _, st := range p.Stages {
			v.Chips = append(v.Chips, stageChip{st.Name, last[st.Name]})
		}
		ps = append(ps, v)
	}
	s.render(w, r, http.StatusOK, "pipelines", page{Title: "Pipelines", Nav: "pipelines", Refresh: refresh, Data: ps})
}

// --- run history -----------------------------------------------------------

var runStatuses = []string{history.RunRunning, history.RunSucceeded, history.RunFailed, history.RunCancelled}

type runsData struct {
	Pipeline, Status string
	Pipelines        []string
	PerPage, Page    int
	PerPageChoices   []int
	Runs             []*history.Run
	Newer, Older     string // URLs of the neighbouring pages, "" if none
}

// url is the address of a page of the history with d's filters but status.
func (d *runsData) url(status string, page int) string {
	v := url.Values{}
	if d.Pipeline != "" {
		v.Set("pipeline", d.Pipeline)
	}
	if status != "" {
		v.Set("status", status)
	}
	if d.PerPage != defaultPerPage {
		v.Set("limit", strconv.Itoa(d.PerPage))
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	if len(v) == 0 {
		return "/runs"
	}
	return "/runs?" + v.Encode()
}

// StatusURL is the first page of the history filtered to status ("": any).
func (d *runsData) StatusURL(status string) string { return d.url(status, 1) }

func (s *server) runsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := runsData{Pipeline: q.Get("pipeline"), Status: q.Get("status"), PerPage: defaultPerPage, Page: 1,
		PerPageChoices: []int{10, 25, 50, 100, 200}}
	if d.Status != "" && !slices.Contains(runStatuses, d.Status) {
		s.fail(w, r, http.StatusBadRequest, "Bad filter",
			fmt.Sprintf("Unknown run status %q in ?status=: use one of %s.", d.Status, strings.Join(runStatuses, ", ")))
		return
	}
	var err error
	if d.PerPage, err = intParam(q, "limit", defaultPerPage, 1, maxPerPage); err == nil {
		d.Page, err = intParam(q, "page", 1, 1, maxPage)
	}
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "Bad parameter", err.Error())
		return
	}
	// One more than the page needs tells whether an older page exists.
	runs, err := s.src.Runs(d.Pipeline, d.Status, d.Page*d.PerPage+1)
	if err != nil {
		s.sourceError(w, r, "Runs not found", err)
		return
	}
	from := min((d.Page-1)*d.PerPage, len(runs))
	to := min(from+d.PerPage, len(runs))
	d.Runs = runs[from:to]
	if d.Page > 1 {
		d.Newer = d.url(d.Status, d.Page-1)
	}
	if len(runs) > to && d.Page < maxPage {
		d.Older = d.url(d.Status, d.Page+1)
	}
	for _, p := range s.src.Pipelines() {
		if p.Name != "" {
			d.Pipelines = append(d.Pipelines, p.Name)
		}
	}
	if d.Pipeline != "" && !slices.Contains(d.Pipelines, d.Pipeline) {
		d.Pipelines = append(d.Pipelines, d.Pipeline) // a pipeline no longer loaded still has history
	}
	refresh := 0
	for _, run := range d.Runs {
		if run.Status == history.RunRunning {
			refresh = 5
		}
	}
	title := "Runs"
	if d.Pipeline != "" {
		title = "Runs of " + d.Pipeline
	}
	s.render(w, r, http.StatusOK, "runs", page{Title: title, Nav: "runs", Refresh: refresh, Data: &d})
}

func intParam(q url.Values, name string, def, lo, hi int) (int, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("?%s=%s: want a whole number from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

// --- one run ---------------------------------------------------------------

type runData struct {
	Run    *history.Run
	Graph  *dagLayout
	Nodes  []nodeView
	Edges  []dagEdge
	Legend []string
	// Unknown is set when the run's pipeline is not loaded, so the edges
	// could not be drawn.
	Unknown bool
}

// nodeView is a drawn stage.
type nodeView struct {
	dagNode
	Stage  history.StageRun
	Status string // the stage status, "pending" when not started yet
	// Title is the name, shortened with an ellipsis to fit the node.
	Title string
	// Geometry of the status pill and the time beside it.
	BarEnd, PillW, PillMid, TimeX float64
}

// newNodeView places the parts of one node.
func newNodeView(n dagNode, st history.StageRun) nodeView {
	v := nodeView{dagNode: n, Stage: st, Status: stageStatus(st.Status), Title: n.Name, BarEnd: n.H - 9}
	if fit := int((n.W - 30) / charW); len([]rune(n.Name)) > fit {
		v.Title = string([]rune(n.Name)[:fit-1]) + "…"
	}
	v.PillW = float64(len(statusLabel(v.Status)))*7 + 14
	v.PillMid = 22 + v.PillW/2
	v.TimeX = 22 + v.PillW + 8
	return v
}

func (s *server) runPage(w http.ResponseWriter, r *http.Request) {
	run, err := s.src.Run(r.PathValue("id"))
	if err != nil {
		s.sourceError(w, r, "Run not found", err)
		return
	}
	deps := map[string][]string{}
	unknown := true
	for _, p := range s.src.Pipelines() {
		if p.Name == run.Pipeline {
			unknown = false
			for _, st := range p.Stages {
				deps[st.Name] = st.Deps
			}
		}
	}
	names := make([]string, len(run.Stages))
	byName := map[string]history.StageRun{}
	for i, st := range run.Stages {
		names[i] = st.Name
		byName[st.Name] = st
	}
	g := layout(names, deps)
	d := runData{Run: run, Graph: g, Edges: g.Edges, Unknown: unknown}
	seen := map[string]bool{}
	for _, n := range g.Nodes {
		v := newNodeView(n, byName[n.Name])
		d.Nodes = append(d.Nodes, v)
		seen[v.Status] = true
	}
	for _, st := range stageStatuses {
		if seen[st] {
			d.Legend = append(d.Legend, st)
		}
	}
	refresh := 0
	if run.Status == history.RunRunning {
		refresh = refreshSeconds
	}
	s.render(w, r, http.StatusOK, "run", page{Title: run.Pipeline + " · " + run.ID, Nav: "runs", Refresh: refresh, Data: d})
}

// --- stage logs ------------------------------------------------------------

type logData struct {
	Run       *history.Run
	Stage     history.StageRun
	Status    string
	Text      string
	Size      int
	Truncated bool
	Missing   string // why there is no log, if there is none
}

// runStage finds the run and its stage, or answers 404.
func (s *server) runStage(w http.ResponseWriter, r *http.Request) (*history.Run, history.StageRun, bool) {
	run, err := s.src.Run(r.PathValue("id"))
	if err != nil {
		s.sourceError(w, r, "Run not found", err)
		return nil, history.StageRun{}, false
	}
	name := r.PathValue("stage")
	for _, st := range run.Stages {
		if st.Name == name {
			return run, st, true
		}
	}
	var names []string
	for _, st := range run.Stages {
		names = append(names, st.Name)
	}
	s.fail(w, r, http.StatusNotFound, "Stage not found",
		fmt.Sprintf("Run %s of %s has no stage %q (its stages: %s).", run.ID, run.Pipeline, name, strings.Join(names, ", ")))
	return nil, history.StageRun{}, false
}

func (s *server) logPage(w http.ResponseWriter, r *http.Request) {
	run, st, ok := s.runStage(w, r)
	if !ok {
		return
	}
	d := logData{Run: run, Stage: st, Status: stageStatus(st.Status)}
	b, err := s.src.Log(run.ID, st.Name)
	status := http.StatusOK
	switch {
	case errors.Is(err, history.ErrNotFound):
		// The run and stage exist; the page says why there is no log.
		status = http.StatusNotFound
		d.Missing = noLogReason(d.Status)
	case err != nil:
		s.sourceError(w, r, "Log not found", err)
		return
	default:
		d.Size = len(b)
		if len(b) > logTail {
			b = b[len(b)-logTail:]
			if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
				b = b[i+1:]
			}
			d.Truncated = true
		}
		d.Text = strings.ToValidUTF8(string(b), "\uFFFD")
	}
	refresh := 0
	if d.Status == history.Running || run.Status == history.RunRunning && d.Status == "pending" {
		refresh = refreshSeconds
	}
	s.render(w, r, status, "log", page{Title: st.Name + " log · " + run.ID, Nav: "runs", Refresh: refresh, Data: d})
}

func (s *server) logText(w http.ResponseWriter, r *http.Request) {
	run, st, ok := s.runStage(w, r)
	if !ok {
		return
	}
	b, err := s.src.Log(run.ID, st.Name)
	if err != nil {
		s.sourceError(w, r, "Log not found", err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

func noLogReason(status string) string {
	switch status {
	case "pending":
		return "This stage has not started yet."
	case history.Skipped:
		return "This stage was skipped, so it never ran and has no log."
	case history.Running:
		return "This stage is running; its log is shown when it finishes."
	}
	return "No log was captured for this stage."
}
