package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/scheduler"
	"github.com/orch-dev/orch/pkg/stages"
)

// Options configure a Server.
type Options struct {
	// Root is the workspace root (absolute); state is in Root/.orch.
	Root string
	// Args are the DIR or FILE arguments of `orch serve`.
	Args  []string
	Kinds *stages.Registry
	// OpenEngine opens the engine for a run of p, as `orch run` would
	// (same cache, same remote). p is nil for reading logs.
	OpenEngine func(p *pipeline.Pipeline) (*engine.Engine, error)
	// Jobs is the stage concurrency of each run.
	Jobs int
	// Addr is the HTTP listen address (default 127.0.0.1:8080).
	Addr string
	// Token, if set, is required as "Authorization: Bearer TOKEN" on
	// mutating API calls. Without it, Addr must be a loopback address.
	Token string
	// Web is the web page, mounted at "/"; nil serves a placeholder.
	Web http.Handler
	// Poll is how often pipeline files are checked for changes
	// (default 2s).
	Poll time.Duration
	// Grace is how long running runs may go on after shutdown starts
	// before they are cancelled (default 30s).
	Grace time.Duration
	// Wait makes a second serve wait for the lock instead of exiting.
	Wait bool
	// AddrFile, if set, receives the bound address (host:port) once the
	// server listens: with Addr "127.0.0.1:0", how scripts find the port.
	AddrFile string
	Log      *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server is `orch serve`.
type Server struct {
	opts    Options
	log     *slog.Logger
	catalog *catalog
	db      *history.DB
	live    *history.Live
	metrics *metrics
	sched   *scheduler.Scheduler
	runner  *runner
	reader  *engine.Engine // reads logs
	addr    string         // the bound address
	// hooks is the context of on_failure hooks: it ends when the grace
	// period of a shutdown is over.
	hooks context.Context
}

// errGraceOver ends on_failure hooks still going when serve's grace
// period is over.
var errGraceOver = errors.New("cancelled: orch serve is shutting down and its grace period is over")

// ErrLocked is returned by Run when another serve holds the lock.
var ErrLocked = errors.New("another orch serve is running on this workspace")

// New checks opts; Run starts serving.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:8080"
	}
	if opts.Poll <= 0 {
		opts.Poll = 2 * time.Second
	}
	if opts.Grace <= 0 {
		opts.Grace = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = discard()
	}
	if len(opts.Args) == 0 {
		opts.Args = []string{"pipelines"}
	}
	if opts.Token == "" {
		if err := checkLoopback(opts.Addr); err != nil {
			return nil, err
		}
	}
	s := &Server{
		opts: opts, log: opts.Log, live: history.NewLive(), metrics: newMetrics(), hooks: context.Background(),
		catalog: &catalog{root: opts.Root, args: opts.Args, kinds: opts.Kinds},
		db:      history.Open(filepath.Join(opts.Root, ".orch", "history.db")),
	}
	s.runner = &runner{s: s}
	if _, err := s.catalog.paths(); err != nil {
		return nil, err
	}
	return s, nil
}

// checkLoopback refuses a listen address that is not loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--addr %s is not a loopback address: set ORCH_TOKEN so that mutating API calls need it, or bind 127.0.0.1", addr)
}

// Addr is the address the HTTP server listens on, once Run has bound it.
func (s *Server) Addr() string { return s.addr }

// Run takes the lock, serves until ctx ends, then shuts down: no new
// ticks, runs in progress get Grace to finish, then are cancelled.
// ready, if not nil, is called once the HTTP server listens.
func (s *Server) Run(ctx context.Context, ready func(addr string)) error {
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()

	host, _ := os.Hostname()
	// No run of this process exists yet: a "running" run recorded with our
	// own PID was left by an earlier serve that had it (PID 1 in a
	// container restarted after a crash, or a reused PID).
	self := os.Getpid()
	alive := func(pid int) bool { return pid != self && processAlive(pid) }
	if ids, err := s.db.MarkAbandoned(host, alive, s.opts.Now()); err != nil {
		s.log.Error("mark interrupted runs", "err", err)
	} else {
		for _, id := range ids {
			s.log.Warn("run was left running by an orch process that died; marked failed (interrupted)", "run", id)
		}
	}
	if s.reader, err = s.opts.OpenEngine(nil); err != nil {
		return err
	}
	defer s.reader.Close()

	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.addr = ln.Addr().String()
	// The scheduler exists before the first request: the API's trigger and
	// cancel calls go through it.
	runCtx, cancelRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRuns()
	hooks, stopHooks := context.WithCancelCause(context.Background())
	defer stopHooks(nil)
	s.hooks = hooks
	s.sched = scheduler.New(scheduler.Options{
		Runner: s.runner, Ticks: s.db, Now: s.opts.Now, RunContext: runCtx, Log: s.log, OnTick: s.metrics.tick,
	})
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve(ln) }()
	schedCtx, stopSched := context.WithCancel(ctx)
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		_ = s.sched.Run(schedCtx)
	}()
	s.reload(ctx)
	s.log.Info("serving", "addr", "http://"+s.addr, "workspace", s.opts.Root, "pipelines", len(s.catalog.snapshot()))
	if s.opts.AddrFile != "" {
		if err := writeFileAtomic(s.opts.AddrFile, []byte(s.addr+"\n")); err != nil {
			s.log.Error("write --addr-file", "err", err)
		}
	}
	if ready != nil {
		ready(s.addr)
	}

	poll := time.NewTicker(s.opts.Poll)
	defer poll.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-httpDone:
			stopSched()
			<-schedDone
			return fmt.Errorf("http: %w", err)
		case <-poll.C:
			s.reload(ctx)
		}
	}

	s.log.Info("shutting down: no new ticks; waiting for runs in progress", "grace", s.opts.Grace.String())
	stopSched()
	<-schedDone
	finished := make(chan struct{})
	go func() {
		s.runner.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(s.opts.Grace):
		s.log.Warn("grace period over; cancelling runs in progress")
		cancelRuns()
		stopHooks(errGraceOver)
		<-finished
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	s.log.Info("stopped")
	return nil
}

// reload re-reads changed pipeline files and gives the scheduler the
// current set.
func (s *Server) reload(ctx context.Context) {
	changes, err := s.catalog.reload()
	if err != nil {
		s.log.Error("list pipeline files", "err", err)
		return
	}
	for _, c := range changes {
		switch {
		case c.removed:
			s.log.Info("pipeline file removed; its schedule stops", "pipeline", c.name, "file", c.file)
			s.metrics.loadError.DeleteLabelValues(c.file)
		case c.loaded:
			s.log.Info("pipeline loaded", "pipeline", c.name, "file", c.file)
			s.metrics.loadError.WithLabelValues(c.file).Set(0)
		case c.name != "":
			s.log.Error("pipeline file does not load; the last good version keeps running", "pipeline", c.name, "file", c.file, "err", c.err)
			s.metrics.loadError.WithLabelValues(c.file).Set(1)
		default:
			s.log.Error("pipeline file does not load", "file", c.file, "err", c.err)
			s.metrics.loadError.WithLabelValues(c.file).Set(1)
		}
	}
	if len(changes) == 0 && s.sched != nil {
		return
	}
	var jobs []scheduler.Job
	for _, l := range s.catalog.snapshot() {
		if l.p != nil {
			jobs = append(jobs, scheduler.Job{Pipeline: l.p.Name, Schedule: l.p.Schedule})
		}
	}
	if err := s.sched.SetJobs(ctx, jobs); err != nil && ctx.Err() == nil {
		s.log.Error("update schedules", "err", err)
	}
}

// lock takes .orch/serve.lock: exits with ErrLocked if another serve
// holds it, or waits for it with Options.Wait.
func (s *Server) lock(ctx context.Context) (func(), error) {
	dir := filepath.Join(s.opts.Root, ".orch")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "serve.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for first := true; ; first = false {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		holder, _ := os.ReadFile(path)
		who := strings.TrimSpace(string(holder))
		if !s.opts.Wait {
			f.Close()
			return nil, fmt.Errorf("%w (%s holds %s); it schedules these pipelines already. Stop it first, or start this one with --wait to take over when it exits", ErrLocked, who, path)
		}
		if first {
			s.log.Info("waiting for the other orch serve to exit", "holder", who, "lock", path)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	host, _ := os.Hostname()
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte("pid "+strconv.Itoa(os.Getpid())+" on "+host+"\n"), 0)
	return func() { f.Close() }, nil
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// runURL is the API path of a run.
func (s *Server) runURL(id string) string {
	if s.addr == "" {
		return ""
	}
	return "http://" + s.addr + "/api/runs/" + id
}

// SetWeb mounts the web page at "/" (before Run).
func (s *Server) SetWeb(h http.Handler) { s.opts.Web = h }

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
