package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/scheduler"
	"github.com/orch-dev/orch/pkg/store"
)

// ErrBadRequest marks a trigger the caller got wrong (an unknown param):
// the API answers 400.
var ErrBadRequest = errors.New("bad request")

// runner starts runs through the engine, as `orch run` does; it is the
// scheduler's Runner.
type runner struct {
	s  *Server
	wg sync.WaitGroup
}

var _ scheduler.Runner = (*runner)(nil)

// Start implements scheduler.Runner.
func (r *runner) Start(ctx context.Context, req scheduler.Request) (string, <-chan struct{}, error) {
	s := r.s
	p, err := s.catalog.instantiate(req.Pipeline, req.Params)
	if err != nil {
		var es pipeline.Errors
		if errors.As(err, &es) {
			return "", nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		return "", nil, err
	}
	e, err := s.opts.OpenEngine(p)
	if err != nil {
		return "", nil, err
	}
	var tick *history.Tick
	if !req.Tick.IsZero() {
		tick = &history.Tick{Time: req.Tick, Schedule: req.Schedule}
	}
	var id string // set by begin, before any event
	begun := make(chan string, 1)
	begin := func(run *history.Run) error {
		run.Tick = req.Tick
		if err := e.History.StartRun(run, tick); err != nil {
			return err
		}
		id = run.ID
		s.live.Begin(run)
		s.metrics.active.WithLabelValues(p.Name).Inc()
		begun <- run.ID
		return nil
	}
	events := func(ev engine.Event) {
		s.metrics.event(p.Name, ev)
		s.live.Update(id, ev.Stage, func(sr *history.StageRun) { liveStage(sr, ev) })
		if ev.Type == engine.EvWarn {
			s.log.Warn(ev.Reason, "pipeline", p.Name, "run", id, "stage", ev.Stage)
		}
	}
	done := make(chan struct{})
	failed := make(chan error, 1)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(done)
		res, err := e.Run(ctx, p, engine.RunOptions{Jobs: s.opts.Jobs, Trigger: req.Trigger, Events: events, Begin: begin})
		r.account(e)
		_ = e.Close()
		if id == "" {
			if err == nil {
				err = errors.New("run ended before it began")
			}
			failed <- err
			return
		}
		s.live.End(id)
		s.metrics.active.WithLabelValues(p.Name).Dec()
		if res == nil {
			s.log.Error("run", "pipeline", p.Name, "run", id, "err", err)
			return
		}
		run := res.Run
		s.metrics.runs.WithLabelValues(p.Name, run.Status).Inc()
		hit, ran, nfailed, skipped := res.Counts()
		s.log.Info("run finished", "pipeline", p.Name, "run", id, "status", run.Status, "hit", hit, "ran", ran,
			"failed", nfailed, "skipped", skipped, "duration", run.Ended.Sub(run.Started).Round(time.Millisecond).String())
		if run.Status == history.RunFailed && p.OnFailure != nil {
			s.notify(s.hooks, p, run)
		}
	}()
	select {
	case id := <-begun:
		return id, done, nil
	case err := <-failed:
		return "", nil, err
	}
}

// account adds the remote transfer counts of e's store to the metrics.
func (r *runner) account(e *engine.Engine) {
	if t, ok := e.Cache.Store.(*store.Tiered); ok {
		r.s.metrics.uploaded.Add(float64(t.Uploaded.Load()))
		r.s.metrics.downloaded.Add(float64(t.Downloaded.Load()))
	}
}

// liveStage applies a progress event to a stage's live state.
func liveStage(sr *history.StageRun, ev engine.Event) {
	switch ev.Type {
	case engine.EvStart:
		sr.Status, sr.Started, sr.Reason = history.Running, ev.Time, ev.Reason
	case engine.EvWaiting:
		sr.Status, sr.Reason = history.Running, ev.Reason
	case engine.EvHit:
		sr.Status, sr.Duration = history.Hit, ev.Duration
	case engine.EvRan:
		sr.Status, sr.Duration = history.Ran, ev.Duration
	case engine.EvFailed:
		sr.Status, sr.Error, sr.Duration = history.Failed, ev.Reason, ev.Duration
	case engine.EvSkipped:
		sr.Status, sr.Reason = history.Skipped, ev.Reason
	}
	if !ev.Key.IsZero() {
		sr.Key = ev.Key.String()
	}
	if !ev.Log.IsZero() {
		sr.Log = ev.Log.String()
	}
}

// Summary is what on_failure receives as JSON: the run as the history
// has it, with the failed stages' errors.
type Summary struct {
	*history.Run
	// URL is the run in serve's API.
	URL string `json:"url,omitempty"`
}

// notify runs the pipeline's on_failure command and webhook with the run
// summary; failures are logged and counted, never fatal. Ending ctx (serve's
// grace period is over) stops them.
func (s *Server) notify(ctx context.Context, p *pipeline.Pipeline, run *history.Run) {
	o := p.OnFailure
	body, err := json.Marshal(Summary{Run: run, URL: s.runURL(run.ID)})
	if err != nil {
		s.log.Error("on_failure: encode summary", "err", err)
		return
	}
	log := s.log.With("pipeline", p.Name, "run", run.ID)
	if o.Command != "" {
		if err := runHook(ctx, o, p, run, body); err != nil {
			s.metrics.notifyFailed.WithLabelValues(p.Name).Inc()
			log.Error("on_failure command failed", "command", o.Command, "err", err)
		} else {
			log.Info("on_failure command ran", "command", o.Command)
		}
	}
	if o.Webhook != "" {
		if err := postHook(ctx, o, body); err != nil {
			s.metrics.notifyFailed.WithLabelValues(p.Name).Inc()
			log.Error("on_failure webhook failed", "url", o.Webhook, "err", err)
		} else {
			log.Info("on_failure webhook called", "url", o.Webhook)
		}
	}
}

// hookContext bounds a hook by its timeout and by parent (serve's grace).
func hookContext(parent context.Context, o *pipeline.OnFailure) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(parent, o.Timeout, fmt.Errorf("timed out after %s", o.Timeout))
}

func runHook(parent context.Context, o *pipeline.OnFailure, p *pipeline.Pipeline, run *history.Run, body []byte) error {
	ctx, cancel := hookContext(parent, o)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", o.Command)
	cmd.Dir = p.Root
	cmd.Stdin = bytes.NewReader(body)
	cmd.Env = append(os.Environ(), "ORCH_RUN_ID="+run.ID, "ORCH_PIPELINE="+p.Name, "ORCH_RUN_STATUS="+run.Status)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(tailBytes(out, 500))))
	}
	return nil
}

func postHook(parent context.Context, o *pipeline.OnFailure, body []byte) error {
	ctx, cancel := hookContext(parent, o)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.Webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "orch-serve")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", o.Webhook, context.Cause(ctx))
		}
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
