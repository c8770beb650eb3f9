// Package web is the web page of `orch serve`: server-rendered HTML embedded
// in the binary, showing the pipelines and their next runs, the run history,
// and one run as its DAG with each stage coloured by outcome.
//
// The page reads everything through Source, which `orch serve` implements
// over the run history and its loaded pipelines (live state included while a
// run is in progress). This file is the contract between the two.
package web

import (
	"time"

	"github.com/orch-dev/orch/pkg/history"
)

// Source is what the page reads.
type Source interface {
	// Pipelines lists the loaded pipelines, sorted by name.
	Pipelines() []Pipeline
	// Runs lists runs newest first. Empty pipeline or status means any;
	// limit <= 0 means a sensible default.
	Runs(pipeline, status string, limit int) ([]*history.Run, error)
	// Run returns one run with its stages as they are now: while the run is
	// in progress, stages report history.Running / history.Hit / ... live.
	// id may be a prefix of one run's ID. An unknown ID returns an error
	// wrapping history.ErrNotFound, a prefix of several runs one wrapping
	// history.ErrAmbiguous.
	Run(id string) (*history.Run, error)
	// Log returns the captured log of one stage of one run. An unknown run,
	// stage or a stage without a log returns an error wrapping
	// history.ErrNotFound.
	Log(runID, stage string) ([]byte, error)
}

// Pipeline is one loaded pipeline as serve sees it.
type Pipeline struct {
	// Name is empty for a file that has never loaded (Error says why).
	Name        string
	File        string
	Description string
	// Schedule is the cron expressions as written ("0 2 * * *", "@daily"),
	// empty when the pipeline is not scheduled.
	Schedule []string
	Timezone string
	// Next holds the next run times (up to five), in Timezone.
	Next []time.Time
	// Stages is the graph in topological order.
	Stages []Stage
	// LastRun is the newest run, nil if none.
	LastRun *history.Run
	// Error is the last reload error when the file stopped parsing; serve
	// keeps running the last good version meanwhile.
	Error string
}

// Stage is one node of a pipeline's graph.
type Stage struct {
	Name string
	Kind string
	// Deps are the upstream stages (data and order-only edges).
	Deps []string
}
