package server

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/scheduler"
	"github.com/orch-dev/orch/pkg/store"
)

// Handler is serve's HTTP handler:
//
//	GET  /api/pipelines                       pipelines with next run times
//	GET  /api/runs?pipeline=P&status=S&limit=N runs, newest first
//	GET  /api/runs/{id}                       one run with its stages (live)
//	GET  /api/runs/{id}/stages/{stage}/log    a stage's captured log
//	POST /api/pipelines/{name}/runs           trigger now: {"params": {...}}
//	POST /api/runs/{id}/cancel                cancel a run in progress
//	GET  /metrics, /healthz
//	/                                         the web page (Options.Web)
//
// POST calls need "Authorization: Bearer $ORCH_TOKEN" when a token is set.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	src := source{s}
	mux.HandleFunc("GET /api/pipelines", s.getPipelines)
	mux.HandleFunc("GET /api/runs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := 0
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 0 {
				writeError(w, http.StatusBadRequest, fmt.Errorf("limit %q: want a whole number", l))
				return
			}
			limit = n
		}
		status := q.Get("status")
		switch status {
		case "", history.RunRunning, history.RunSucceeded, history.RunFailed, history.RunCancelled:
		default:
			writeError(w, http.StatusBadRequest, fmt.Errorf("status %q: want running, succeeded, failed or cancelled", status))
			return
		}
		runs, err := src.Runs(q.Get("pipeline"), status, limit)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		if runs == nil {
			runs = []*history.Run{}
		}
		writeJSON(w, http.StatusOK, runs)
	})
	mux.HandleFunc("GET /api/runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		run, err := src.Run(r.PathValue("id"))
		if err != nil {
			writeError(w, lookupStatus(err), err)
			return
		}
		writeJSON(w, http.StatusOK, run)
	})
	mux.HandleFunc("GET /api/runs/{id}/stages/{stage}/log", func(w http.ResponseWriter, r *http.Request) {
		b, err := src.Log(r.PathValue("id"), r.PathValue("stage"))
		if err != nil {
			writeError(w, lookupStatus(err), err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(b)
	})
	mux.Handle("POST /api/pipelines/{name}/runs", s.auth(http.HandlerFunc(s.trigger)))
	mux.Handle("POST /api/runs/{id}/cancel", s.auth(http.HandlerFunc(s.cancel)))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no API endpoint %s %s", r.Method, r.URL.Path))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	if s.opts.Web != nil {
		mux.Handle("/", s.opts.Web)
	} else {
		mux.HandleFunc("/", placeholder)
	}
	return mux
}

func placeholder(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, `<!doctype html><title>orch serve</title><h1>orch serve</h1>
<p>The web page is not built into this binary. The API: <a href="/api/pipelines">/api/pipelines</a>,
<a href="/api/runs">/api/runs</a>, <a href="/metrics">/metrics</a>.</p>`)
}

// auth guards mutating calls: a request another web site's page makes (a
// cross-site form or fetch, which a browser marks with Origin and
// Sec-Fetch-Site) is refused, so without a token a page the user visits
// cannot trigger or cancel runs on a loopback serve; then the bearer token
// is required when one is set.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if crossSite(r) {
			writeError(w, http.StatusForbidden, errors.New("cross-site request refused: call the API from the command line or a same-origin page"))
			return
		}
		if s.opts.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.opts.Token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="orch"`)
				msg := "this call needs Authorization: Bearer $ORCH_TOKEN"
				if ok {
					msg = "wrong bearer token"
				}
				writeError(w, http.StatusUnauthorized, errors.New(msg))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// pipelineJSON is one pipeline in GET /api/pipelines.
type pipelineJSON struct {
	Name          string       `json:"name,omitempty"`
	File          string       `json:"file"`
	Description   string       `json:"description,omitempty"`
	Schedule      []string     `json:"schedule,omitempty"`
	Timezone      string       `json:"timezone,omitempty"`
	Catchup       string       `json:"catchup,omitempty"`
	CatchupWindow string       `json:"catchup_window,omitempty"`
	Overlap       string       `json:"overlap,omitempty"`
	MaxActiveRuns int          `json:"max_active_runs,omitempty"`
	Next          []time.Time  `json:"next_runs,omitempty"`
	Stages        []stageJSON  `json:"stages,omitempty"`
	LastRun       *history.Run `json:"last_run,omitempty"`
	Error         string       `json:"error,omitempty"`
}

type stageJSON struct {
	Name string   `json:"name"`
	Kind string   `json:"kind"`
	Deps []string `json:"deps,omitempty"`
}

func (s *Server) getPipelines(w http.ResponseWriter, r *http.Request) {
	out := []pipelineJSON{}
	for _, p := range (source{s}).Pipelines() {
		pj := pipelineJSON{Name: p.Name, File: p.File, Description: p.Description, Schedule: p.Schedule,
			Timezone: p.Timezone, Next: p.Next, LastRun: p.LastRun, Error: p.Error}
		for _, st := range p.Stages {
			pj.Stages = append(pj.Stages, stageJSON(st))
		}
		if l, ok := s.catalog.get(p.Name); ok && l.p.Schedule != nil {
			sc := l.p.Schedule
			pj.Catchup, pj.Overlap, pj.MaxActiveRuns = sc.Catchup, sc.Overlap, sc.MaxActiveRuns
			if sc.CatchupWindow > 0 {
				pj.CatchupWindow = sc.CatchupWindow.String()
			}
		}
		out = append(out, pj)
	}
	writeJSON(w, http.StatusOK, out)
}

// triggerBody is the body of POST /api/pipelines/{name}/runs.
type triggerBody struct {
	Params map[string]string `json:"params"`
}

func (s *Server) trigger(w http.ResponseWriter, r *http.Request) {
	var body triggerBody
	if r.ContentLength != 0 {
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, fmt.Errorf("invalid JSON body: %v (want {\"params\": {\"NAME\": \"VALUE\"}})", err))
			return
		}
	}
	name := r.PathValue("name")
	id, err := s.sched.Trigger(r.Context(), name, body.Params)
	switch {
	case errors.Is(err, scheduler.ErrUnknownPipeline):
		writeError(w, http.StatusNotFound, err)
		return
	case errors.Is(err, scheduler.ErrStopped):
		writeError(w, http.StatusServiceUnavailable, errors.New("orch serve is shutting down; no new runs"))
		return
	case errors.Is(err, ErrBadRequest):
		writeError(w, http.StatusBadRequest, errors.New(strings.TrimPrefix(err.Error(), ErrBadRequest.Error()+": ")))
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	s.log.Info("run triggered", "pipeline", name, "run", id, "params", body.Params, "remote", r.RemoteAddr)
	w.Header().Set("Location", "/api/runs/"+id)
	writeJSON(w, http.StatusCreated, map[string]string{"id": id, "url": "/api/runs/" + id})
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) {
	run, err := (source{s}).Run(r.PathValue("id"))
	if err != nil {
		writeError(w, lookupStatus(err), err)
		return
	}
	// A run the history has finished is not cancelled, even if its
	// goroutine has not yet reported back to the scheduler.
	if run.Status != history.RunRunning || !s.sched.Cancel(r.Context(), run.ID) {
		writeError(w, http.StatusConflict, fmt.Errorf("run %s is not in progress in this orch serve (status %s)", run.ID, run.Status))
		return
	}
	s.log.Info("run cancelled", "run", run.ID, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": run.ID, "status": "cancelling"})
}

// lookupStatus maps a lookup error to an HTTP status.
func lookupStatus(err error) int {
	switch {
	case errors.Is(err, history.ErrNotFound) || store.IsNotFound(err):
		return http.StatusNotFound
	case errors.Is(err, history.ErrAmbiguous):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// crossSite reports whether a browser says r comes from another site's page.
func crossSite(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	return err != nil || u.Host != r.Host
}
