package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/orch-dev/orch/pkg/engine"
)

type runFlags struct {
	jobs      int
	force     []string
	forceAll  bool
	params    []string
	keepGoing bool
	executor  string
	sync      bool
}

func newRunCmd(g *globals) *cobra.Command {
	f := &runFlags{}
	c := &cobra.Command{
		Use:   "run PIPELINE [STAGE...]",
		Short: "Run a pipeline: restore cached stages, execute the rest",
		Long: `Run executes PIPELINE. A stage whose cache key has a record is restored
(HIT); the others run, in parallel as the DAG allows. STAGE limits the run to
those stages and everything upstream of them.` + "\n" + exitCodesHelp,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if f.jobs < 1 {
				return badInput(fmt.Errorf("-j %d: must be at least 1", f.jobs))
			}
			g.executor = f.executor
			p, err := g.load(args[0], f.params)
			if err != nil {
				return err
			}
			sel := engine.Selection{Targets: args[1:], Force: f.force, ForceAll: f.forceAll}
			if _, err := engine.Select(p, sel); err != nil {
				return badInput(err)
			}
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			e.History.NoSync = !f.sync // the history is as durable as the cache
			pr := newProgress(c.OutOrStdout(), len(p.Stages))
			started := time.Now()
			res, err := e.Run(c.Context(), p, engine.RunOptions{
				Selection: sel, Jobs: f.jobs, KeepGoing: f.keepGoing, Events: pr.event, Trigger: "cli", Sync: f.sync,
			})
			pr.stop()
			if err != nil && res == nil {
				return err
			}
			hit, ran, failed, skipped := res.Counts()
			fmt.Fprintf(c.OutOrStdout(), "%s: %d cached, %d ran, %d failed, %d skipped in %s (cache saved %s) · run %s\n",
				p.Name, hit, ran, failed, skipped, fmtDur(time.Since(started)), fmtDur(res.Run.Saved), res.Run.ID)
			if err != nil {
				return err
			}
			if errors.Is(res.Err, engine.ErrInterrupted) {
				return &exitError{exitInterrupted, fmt.Errorf("interrupted; unfinished stages were stopped and recorded nothing")}
			}
			if res.Err != nil {
				return &exitError{exitFailed, firstLine(res.Err)}
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.IntVarP(&f.jobs, "jobs", "j", engine.Jobs(), "stages to execute at once")
	fl.StringArrayVar(&f.force, "force", nil, "run STAGE even if cached (repeatable)")
	fl.BoolVar(&f.forceAll, "force-all", false, "run every selected stage even if cached")
	fl.StringArrayVarP(&f.params, "param", "p", nil, "override a pipeline param: name=value (repeatable)")
	fl.BoolVarP(&f.keepGoing, "keep-going", "k", false, "after a failure, keep running stages that do not depend on it")
	fl.BoolVar(&f.sync, "sync", false, "flush the cache to stable storage before exiting (one syncfs), so a power cut cannot lose this run's cache entries")
	fl.StringVar(&f.executor, "executor", "", "run every stage's MISS here: local or slurm (default: each stage's executor:)")
	return c
}

// reasonOf is a Slurm event's reason in parentheses, unless it says nothing.
func reasonOf(ev engine.Event) string {
	if ev.Reason == "" || ev.Reason == "None" {
		return ""
	}
	return "(" + ev.Reason + ")"
}

func firstLine(err error) error {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return errors.New(s)
}

// progress renders run events: one line per finished stage, and on a
// terminal a live status line of what is running.
type progress struct {
	w     io.Writer
	tty   bool
	total int

	mu      sync.Mutex
	done    int
	running map[string]time.Time
	jobs    map[string]string // stage → "job ID STATE" (Slurm executor)
	ticker  *time.Ticker
	quit    chan struct{}
	wg      sync.WaitGroup
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, running: map[string]time.Time{}, jobs: map[string]string{}, quit: make(chan struct{})}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		p.ticker = time.NewTicker(200 * time.Millisecond)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				select {
				case <-p.ticker.C:
					p.mu.Lock()
					p.status()
					p.mu.Unlock()
				case <-p.quit:
					return
				}
			}
		}()
	}
	return p
}

func (p *progress) stop() {
	if p.tty {
		p.ticker.Stop()
		close(p.quit)
		p.wg.Wait()
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// status redraws the live line (terminal only); p.mu is held.
func (p *progress) status() {
	if !p.tty {
		return
	}
	names := make([]string, 0, len(p.running))
	for n := range p.running {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %s", n, fmtDur(time.Since(p.running[n]).Round(100*time.Millisecond)))
		if j := p.jobs[n]; j != "" {
			parts[i] += " (" + j + ")"
		}
	}
	line := fmt.Sprintf("[%d/%d] running: %s", p.done, p.total, strings.Join(parts, ", "))
	if len(names) == 0 {
		line = fmt.Sprintf("[%d/%d]", p.done, p.total)
	}
	if len(line) > 160 {
		line = line[:157] + "..."
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

func (p *progress) line(format string, args ...any) {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, format+"\n", args...)
	p.status()
}

func (p *progress) event(ev engine.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	short := "-"
	if !ev.Key.IsZero() {
		short = ev.Key.Short()
	}
	switch ev.Type {
	case engine.EvStart:
		p.running[ev.Stage] = time.Now()
		p.line("%-7s %-20s %s  %s", "RUN", ev.Stage, short, ev.Reason)
	case engine.EvHit:
		p.done++
		p.line("%-7s %-20s %s  restored (saved %s)", "HIT", ev.Stage, short, fmtDur(ev.Duration))
	case engine.EvRan:
		p.done++
		delete(p.running, ev.Stage)
		if ev.Job != "" {
			p.line("%-7s %-20s %s  %s (job %s)", "DONE", ev.Stage, short, fmtDur(ev.Duration), ev.Job)
			break
		}
		p.line("%-7s %-20s %s  %s", "DONE", ev.Stage, short, fmtDur(ev.Duration))
	case engine.EvFailed:
		p.done++
		delete(p.running, ev.Stage)
		p.line("%-7s %-20s %s", "FAILED", ev.Stage, ev.Reason)
	case engine.EvSkipped:
		p.done++
		p.line("%-7s %-20s %s", "SKIPPED", ev.Stage, ev.Reason)
	case engine.EvRetry:
		p.line("%-7s %-20s attempt %d: %s", "RETRY", ev.Stage, ev.Attempt, ev.Reason)
	case engine.EvSlurm:
		p.jobs[ev.Stage] = "job " + ev.Job + " " + ev.State
		p.line("%-7s %-20s job %s %s", "SLURM", ev.Stage, ev.Job, strings.TrimSpace(ev.State+" "+reasonOf(ev)))
	case engine.EvWaiting:
		p.line("%-7s %-20s %s", "WAITING", ev.Stage, ev.Reason)
	case engine.EvWarn:
		p.line("%-7s %-20s %s", "WARNING", ev.Stage, ev.Reason)
	}
}
