package history

import (
	"slices"
	"sync"
)

// Live holds the runs in progress in this process, their stages updated
// as they start and finish, so a reader sees a run as it is now rather
// than as it was stored when it began. Safe for concurrent use.
type Live struct {
	mu   sync.Mutex
	runs map[string]*Run
}

// NewLive returns an empty Live.
func NewLive() *Live { return &Live{runs: map[string]*Run{}} }

// Begin starts tracking r (a copy).
func (l *Live) Begin(r *Run) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs[r.ID] = copyRun(r)
}

// Update applies fn to the tracked stage of run id, if both exist.
func (l *Live) Update(id, stage string, fn func(*StageRun)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.runs[id]
	if r == nil {
		return
	}
	for i := range r.Stages {
		if r.Stages[i].Name == stage {
			fn(&r.Stages[i])
			return
		}
	}
}

// End stops tracking run id.
func (l *Live) End(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.runs, id)
}

// Get returns a copy of the tracked run id.
func (l *Live) Get(id string) (*Run, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.runs[id]
	if !ok {
		return nil, false
	}
	return copyRun(r), true
}

// Overlay returns the live state of r if r is tracked, else r.
func (l *Live) Overlay(r *Run) *Run {
	if lr, ok := l.Get(r.ID); ok && r.Status == RunRunning {
		return lr
	}
	return r
}

func copyRun(r *Run) *Run {
	c := *r
	c.Stages = slices.Clone(r.Stages)
	c.Params = make(map[string]string, len(r.Params))
	for k, v := range r.Params {
		c.Params[k] = v
	}
	return &c
}
