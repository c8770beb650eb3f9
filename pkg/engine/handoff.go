package engine

// In-process handoff of tables between built-in stages (table.Handoff):
// when a built-in kind writes a table output that a built-in stage below
// it in the same run will read, the Writer keeps the arrays it wrote, and
// the reader gets them instead of decoding the file. Tables are matched by
// the content digest the engine computed for the output file when it
// collected it, never by path, so a consumer is only ever given the table
// for the very bytes it would have decoded; a HIT upstream leaves nothing
// in memory and its file is decoded as before. Each table is dropped as
// soon as the last stage of the run that reads it is done. Not on a Slurm
// worker (one stage per process) nor for stages run through Slurm.

import (
	"context"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"sync"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// handoffLimit is the most bytes of arrays the tables kept at once may
// hold, one table included: a table that would take more is not kept
// (its readers decode the file), so a run's peak memory grows by at most
// this much.
const handoffLimit = 512 << 20

type handoffs struct {
	verify bool // ORCH_HANDOFF=verify: check each kept table against its file
	mu     sync.Mutex
	// users counts, per "stage/output", the built-in stages of the run
	// that read it and have not finished.
	users  map[string]int
	tables map[digest.Digest]*keptTable
	bytes  int64 // of the tables kept
}

type keptTable struct {
	digest digest.Digest // of the file the table was written to
	mem    *table.Mem
	// from are the outputs ("stage/output") whose bytes these are and
	// whose readers are counted in users: only their readers are given
	// the table and count down. Another output with the same bytes (a
	// command's copy of the file, a HIT) is not among them, and its
	// readers decode the file: given the table uncounted, one of them
	// could still be reading it when the counted ones drop it.
	from  map[string]bool
	users int
}

// read yields st's inputs that are upstream outputs kept in memory, with
// their tables, looked up by the digest of the output st reads. h.mu is
// held.
func (h *handoffs) read(st *pipeline.Stage, upstream func(string) (map[string]cache.Output, bool)) iter.Seq2[pipeline.Input, *keptTable] {
	return func(yield func(pipeline.Input, *keptTable) bool) {
		for _, in := range st.Inputs {
			if !in.IsRef() {
				continue
			}
			outs, _ := upstream(in.Stage)
			out, ok := outs[in.Output]
			if !ok || out.Dir {
				continue
			}
			if kt := h.tables[out.Digest]; kt != nil && kt.from[in.Stage+"/"+in.Output] && !yield(in, kt) {
				return
			}
		}
	}
}

// builtinLocal reports whether st's kind runs in this process: a built-in
// kind (no command) run locally.
func builtinLocal(st *pipeline.Stage) bool {
	return st.Run == "" && st.Executor != pipeline.ExecSlurm
}

// newHandoffs returns the handoffs of a run of the chosen stages of p, or
// nil when nothing can be handed over: on a worker, or with
// ORCH_HANDOFF=0 in the environment (every input decoded from its file,
// for comparing). ORCH_HANDOFF=verify decodes every kept table's file
// once and compares (table.Verify), dropping a table that differs with a
// warning: a check of the handoff itself.
func newHandoffs(p *pipeline.Pipeline, chosen map[string]bool, worker bool) *handoffs {
	mode := os.Getenv("ORCH_HANDOFF")
	if worker || mode == "0" {
		return nil
	}
	h := &handoffs{verify: mode == "verify", users: map[string]int{}, tables: map[digest.Digest]*keptTable{}}
	for name := range chosen {
		st := p.Stages[name]
		if !builtinLocal(st) {
			continue
		}
		for _, in := range st.Inputs {
			if in.IsRef() && chosen[in.Stage] && builtinLocal(p.Stages[in.Stage]) {
				h.users[in.Stage+"/"+in.Output]++
			}
		}
	}
	if len(h.users) == 0 {
		return nil
	}
	return h
}

// task returns the Handoff of an attempt of st writing its outputs under
// outDir, with inputs materialized at inputs: the tables kept for its
// inputs' digests given, the outputs a stage below reads kept. nil when
// there is nothing to give or keep.
func (h *handoffs) task(st *pipeline.Stage, upstream func(string) (map[string]cache.Output, bool), inputs map[string]string, outDir string) *table.Handoff {
	if h == nil || !builtinLocal(st) {
		return nil
	}
	var th *table.Handoff
	h.mu.Lock()
	defer h.mu.Unlock()
	get := func() *table.Handoff {
		if th == nil {
			// what the tables kept already leave of the budget
			th = table.NewHandoff(handoffLimit - h.bytes)
		}
		return th
	}
	for in, kt := range h.read(st, upstream) {
		get().Give(inputs[in.Name], kt.mem)
	}
	for _, o := range st.Outputs {
		if h.users[st.Name+"/"+o.Name] > 0 {
			get().Keep(filepath.Join(outDir, filepath.FromSlash(o.Path)))
		}
	}
	return th
}

// collect takes the tables th's writers kept for st's outputs, now
// collected into the cache as outs and linked into the workspace under
// linked, and keeps them under their digests for the stages below.
func (h *handoffs) collect(ctx context.Context, st *pipeline.Stage, th *table.Handoff, outs map[string]cache.Output, outDir, linked string, warn func(string)) {
	if h == nil || th == nil {
		return
	}
	for _, o := range st.Outputs {
		path := filepath.Join(outDir, filepath.FromSlash(o.Path))
		m := th.Kept(path)
		if m == nil {
			continue
		}
		if h.verify {
			if err := table.Verify(ctx, filepath.Join(linked, o.Name), m); err != nil {
				warn(fmt.Sprintf("output %s: the table kept in memory is not what its file holds; not handed over: %v", o.Name, err))
				m.Release()
				continue
			}
		}
		h.mu.Lock()
		out, ok := outs[o.Name]
		src := st.Name + "/" + o.Name
		users := h.users[src]
		switch kt := h.tables[out.Digest]; {
		case !ok || out.Dir || users == 0:
			m.Release()
		case kt != nil:
			// The same bytes, kept already: from an upstream re-run after
			// its cached output proved corrupt (the same output, counted
			// once), or from another built-in output that wrote them,
			// whose readers are counted in too.
			if !kt.from[src] {
				kt.from[src] = true
				kt.users += users
			}
			m.Release()
		case h.bytes+m.Bytes() > handoffLimit:
			m.Release()
		default:
			h.tables[out.Digest] = &keptTable{digest: out.Digest, mem: m, from: map[string]bool{src: true}, users: users}
			h.bytes += m.Bytes()
		}
		h.mu.Unlock()
	}
}

// done is called when stage name of the run is finished, whatever its
// outcome: the tables it read lose a user, and go with their last.
func (h *handoffs) done(st *pipeline.Stage, upstream func(string) (map[string]cache.Output, bool)) {
	if h == nil || !builtinLocal(st) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, kt := range h.read(st, upstream) {
		kt.users--
		if kt.users <= 0 {
			kt.mem.Release()
			h.bytes -= kt.mem.Bytes()
			delete(h.tables, kt.digest)
		}
	}
}

// release drops every table still kept (at the end of the run: stages
// that would have read them were skipped).
func (h *handoffs) release() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for d, kt := range h.tables {
		kt.mem.Release()
		delete(h.tables, d)
	}
	h.bytes = 0
}
