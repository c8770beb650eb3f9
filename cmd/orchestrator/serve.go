package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/server"
	"github.com/orch-dev/orch/pkg/server/web"
)

func newServeCmd(g *globals) *cobra.Command {
	var (
		addr, addrFile string
		logFormat      string
		poll, grace    time.Duration
		wait           bool
		jobs           int
	)
	c := &cobra.Command{
		Use:   "serve [DIR | FILE...]",
		Short: "Run pipelines on their schedules; HTTP API, /metrics and the web page",
		Long: `Serve loads the pipeline files (default: the *.yaml files in pipelines/), reloads
them when they change, and runs each on its schedule: through the same engine, cache
and remote as orch run. It serves a JSON API, /metrics, /healthz and a web page on
--addr (127.0.0.1:8080).

Mutating API calls need "Authorization: Bearer $ORCH_TOKEN" when ORCH_TOKEN is set;
without ORCH_TOKEN, serve binds only loopback addresses. One serve schedules a
workspace at a time (.orch/serve.lock): a second exits, or waits with --wait.
SIGTERM / SIGINT: no new ticks; runs in progress get --grace, then are cancelled.` + "\n" + exitCodesHelp,
		RunE: func(c *cobra.Command, args []string) error {
			if jobs < 1 {
				return badInput(fmt.Errorf("-j %d: must be at least 1", jobs))
			}
			log, err := newLogger(c.ErrOrStderr(), logFormat)
			if err != nil {
				return badInput(err)
			}
			root, err := g.root()
			if err != nil {
				return err
			}
			if _, err := g.engineFor(nil); err != nil { // check --remote early
				return err
			}
			s, err := server.New(server.Options{
				Root: root, Args: args, Kinds: g.registry(), Jobs: jobs, Addr: addr,
				Token: os.Getenv("ORCH_TOKEN"), Poll: poll, Grace: grace, Wait: wait, Log: log, AddrFile: addrFile,
				OpenEngine: func(p *pipeline.Pipeline) (*engine.Engine, error) {
					if p == nil {
						return g.engineFor(nil)
					}
					return g.engineFor(p.Cache.Remote)
				},
			})
			if err != nil {
				return badInput(err)
			}
			s.SetWeb(web.New(s.Source()))
			err = s.Run(c.Context(), nil)
			if errors.Is(err, server.ErrLocked) {
				return &exitError{exitFailed, err}
			}
			return err
		},
	}
	fl := c.Flags()
	fl.StringVar(&addr, "addr", "127.0.0.1:8080", "HTTP listen address (non-loopback needs ORCH_TOKEN)")
	fl.StringVar(&addrFile, "addr-file", "", "write the bound host:port to FILE once listening (use with --addr 127.0.0.1:0)")
	fl.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fl.DurationVar(&poll, "poll", 2*time.Second, "how often pipeline files are checked for changes")
	fl.DurationVar(&grace, "grace", 30*time.Second, "on SIGTERM, how long runs in progress may go on before they are cancelled")
	fl.BoolVar(&wait, "wait", false, "if another orch serve holds the workspace, wait for it to exit instead of failing")
	fl.IntVarP(&jobs, "jobs", "j", engine.Jobs(), "stages to execute at once in each run")
	return c
}

// newLogger returns serve's structured logger on w.
func newLogger(w io.Writer, format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// printSchedule prints a pipeline's schedule and its next five run times.
func printSchedule(w io.Writer, sc *pipeline.Schedule, now time.Time) {
	if sc == nil {
		return
	}
	fmt.Fprintf(w, "schedule: %s (%s); catchup %s", strings.Join(sc.Cron, ", "), sc.Timezone, sc.Catchup)
	if sc.CatchupWindow > 0 {
		fmt.Fprintf(w, " within %s", sc.CatchupWindow)
	}
	fmt.Fprintf(w, ", overlap %s, max_active_runs %d\n", sc.Overlap, sc.MaxActiveRuns)
	fmt.Fprintln(w, "next runs:")
	for _, t := range sc.NextN(now, 5) {
		fmt.Fprintf(w, "  %s\n", t.In(sc.Location).Format("2006-01-02 15:04:05 MST (Mon)"))
	}
}
