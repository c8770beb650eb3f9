package pipeline

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/zeebo/blake3"

	"github.com/orch-dev/orch/pkg/dag"
	"github.com/orch-dev/orch/pkg/stages"
	"github.com/orch-dev/orch/pkg/store"
)

// A snapshot is a validated pipeline saved in Options.SnapshotDir, so the
// next Load of the same file with the same options skips YAML decoding and
// validation: a third of `orch plan`'s time on a 1,000-stage pipeline.
//
// A snapshot is used only when everything the loader read is unchanged:
// the file's bytes, the root, the -p values, --executor, the kind names,
// the orch binary (size and modification time), and the outcome of every
// file-system check the loader made (code files and workspace inputs that
// must exist). Anything else — a missing, stale, truncated or corrupt
// snapshot — means a full load, which writes a new one. Only pipelines
// that loaded without errors are saved, so errors are always reported by
// the loader itself.

// snapshotVersion changes whenever the snapshot's layout or the meaning of
// a saved field does.
const snapshotVersion = 1

// statFact is one file-system check the loader made.
type statFact struct {
	Path string
	Err  uint8 // statOK, statMissing or statOther
}

const (
	statOK uint8 = iota
	statMissing
	statOther
)

func statOutcome(path string) uint8 {
	_, err := os.Stat(path)
	return outcome(err)
}

func outcome(err error) uint8 {
	switch {
	case err == nil:
		return statOK
	case errors.Is(err, fs.ErrNotExist):
		return statMissing
	}
	return statOther
}

// stat is os.Stat for the loader's existence checks; it records the
// outcome for the snapshot.
func (l *loader) stat(path string) error {
	_, err := os.Stat(path)
	l.facts = append(l.facts, statFact{Path: path, Err: outcome(err)})
	return err
}

// snapshot is the saved form. Pipeline fields that cannot be encoded (the
// graph, kinds, the schedule's zone and parsed expressions) are rebuilt
// from the encodable ones on load.
type snapshot struct {
	Facts  []statFact
	P      snapPipeline
	Stages []snapStage // in declaration order
	Edges  [][2]string // in the order the loader added them
}

type snapPipeline struct {
	Name, File, Root, Description, Executor string
	Params                                  map[string]stages.Param
	Overrides                               map[string]string
	Remote                                  *store.Remote
	Schedule                                *snapSchedule
	OnFailure                               *OnFailure
	Slurm                                   Slurm
}

type snapSchedule struct {
	Cron          []string
	Timezone      string
	Catchup       string
	CatchupWindow time.Duration
	Overlap       string
	MaxActiveRuns int
	Params        map[string]string
}

type snapStage struct {
	Name, KindName, Run, Executor string
	Code, Env, Needs              []string
	Inputs                        []Input
	Outputs                       []Output
	Params                        map[string]stages.Param
	Timeout                       time.Duration
	Retries                       int
	Cache                         bool
	Resources                     Resources
}

func init() {
	// Param values decoded from YAML: scalars are gob's basic types;
	// these are the rest.
	gob.Register([]any{})
	gob.Register(map[string]any{})
	gob.Register(time.Time{})
}

// snapshotKey digests everything a load depends on besides the file-system
// facts, which the snapshot carries.
func snapshotKey(file string, data []byte, opts Options, root string) [32]byte {
	h := blake3.New()
	var n [8]byte
	put := func(s string) {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put("orch pipeline snapshot")
	binary.LittleEndian.PutUint64(n[:], snapshotVersion)
	h.Write(n[:])
	if exe, err := os.Executable(); err == nil {
		if fi, err := os.Stat(exe); err == nil {
			put(exe)
			put(fi.ModTime().UTC().Format(time.RFC3339Nano))
			binary.LittleEndian.PutUint64(n[:], uint64(fi.Size()))
			h.Write(n[:])
		}
	}
	put(file)
	put(root)
	put(opts.Executor)
	for _, k := range sortedKeys(opts.Params) {
		put(k)
		put(opts.Params[k])
	}
	put("kinds")
	for _, k := range opts.Kinds.Names() {
		put(k)
	}
	put("data")
	binary.LittleEndian.PutUint64(n[:], uint64(len(data)))
	h.Write(n[:])
	h.Write(data)
	var key [32]byte
	copy(key[:], h.Sum(nil))
	return key
}

// snapshotPath is where the snapshot of file lives: one per pipeline file,
// replaced when the file or the options change.
func snapshotPath(dir, file string) string {
	sum := blake3.Sum256([]byte(file))
	return filepath.Join(dir, hex.EncodeToString(sum[:8])+".snap")
}

// The file is: 32 bytes of key, 32 bytes of blake3 over the payload, the
// gob payload.
const snapHeader = 64

func loadSnapshot(path string, key [32]byte, opts Options) *Pipeline {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < snapHeader || !bytes.Equal(b[:32], key[:]) {
		return nil
	}
	payload := b[snapHeader:]
	if sum := blake3.Sum256(payload); !bytes.Equal(b[32:64], sum[:]) {
		return nil
	}
	var s snapshot
	if err := gob.NewDecoder(bytes.NewReader(payload)).Decode(&s); err != nil {
		return nil
	}
	for _, f := range s.Facts {
		if statOutcome(f.Path) != f.Err {
			return nil
		}
	}
	p, err := s.pipeline(opts.Kinds)
	if err != nil {
		return nil
	}
	return p
}

func saveSnapshot(path string, key [32]byte, p *Pipeline, facts []statFact) {
	s := snapshot{Facts: facts, P: snapPipeline{
		Name: p.Name, File: p.File, Root: p.Root, Description: p.Description, Executor: p.Executor,
		Params: p.Params, Overrides: p.Overrides, Remote: p.Cache.Remote, OnFailure: p.OnFailure, Slurm: p.Slurm,
	}}
	if sc := p.Schedule; sc != nil {
		s.P.Schedule = &snapSchedule{Cron: sc.Cron, Timezone: sc.Timezone, Catchup: sc.Catchup, CatchupWindow: sc.CatchupWindow,
			Overlap: sc.Overlap, MaxActiveRuns: sc.MaxActiveRuns, Params: sc.Params}
	}
	for _, name := range p.Graph.Nodes() {
		st := p.Stages[name]
		s.Stages = append(s.Stages, snapStage{
			Name: st.Name, KindName: st.KindName, Run: st.Run, Executor: st.Executor,
			Code: st.Code, Env: st.Env, Needs: st.Needs, Inputs: st.Inputs, Outputs: st.Outputs,
			Params: st.Params, Timeout: st.Timeout, Retries: st.Retries, Cache: st.Cache, Resources: st.Resources,
		})
		for _, in := range st.Inputs {
			if in.IsRef() {
				s.Edges = append(s.Edges, [2]string{in.Stage, name})
			}
		}
		for _, n := range st.Needs {
			s.Edges = append(s.Edges, [2]string{n, name})
		}
	}
	var buf bytes.Buffer
	buf.Write(key[:])
	buf.Write(make([]byte, 32))
	if err := gob.NewEncoder(&buf).Encode(&s); err != nil {
		return // a value gob cannot carry: no snapshot, loads stay correct
	}
	b := buf.Bytes()
	sum := blake3.Sum256(b[snapHeader:])
	copy(b[32:64], sum[:])
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	f, err := os.CreateTemp(dir, ".snap-*")
	if err != nil {
		return
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
}

// pipeline rebuilds the validated pipeline from a snapshot.
func (s *snapshot) pipeline(kinds *stages.Registry) (*Pipeline, error) {
	sp := s.P
	p := &Pipeline{
		Name: sp.Name, File: sp.File, Root: sp.Root, Description: sp.Description, Executor: sp.Executor,
		Params: sp.Params, Overrides: sp.Overrides, Cache: Cache{Remote: sp.Remote}, OnFailure: sp.OnFailure, Slurm: sp.Slurm,
		Stages: make(map[string]*Stage, len(s.Stages)), Graph: dag.New(),
	}
	if p.Params == nil {
		p.Params = map[string]stages.Param{}
	}
	if sc := sp.Schedule; sc != nil {
		loc, err := time.LoadLocation(sc.Timezone)
		if err != nil {
			return nil, err
		}
		p.Schedule = &Schedule{Cron: sc.Cron, Timezone: sc.Timezone, Location: loc, Catchup: sc.Catchup, CatchupWindow: sc.CatchupWindow,
			Overlap: sc.Overlap, MaxActiveRuns: sc.MaxActiveRuns, Params: sc.Params}
		for _, e := range sc.Cron {
			spec, err := ParseCron(e)
			if err != nil {
				return nil, err
			}
			p.Schedule.specs = append(p.Schedule.specs, spec)
		}
	}
	for i := range s.Stages {
		ss := &s.Stages[i]
		kind, ok := kinds.Lookup(ss.KindName)
		if !ok {
			return nil, errors.New("unknown kind " + ss.KindName)
		}
		st := &Stage{
			Name: ss.Name, KindName: ss.KindName, Kind: kind, Run: ss.Run, Executor: ss.Executor,
			Code: ss.Code, Env: ss.Env, Needs: ss.Needs, Inputs: ss.Inputs, Outputs: ss.Outputs,
			Params: ss.Params, Timeout: ss.Timeout, Retries: ss.Retries, Cache: ss.Cache, Resources: ss.Resources,
		}
		if st.Params == nil {
			st.Params = map[string]stages.Param{}
		}
		p.Stages[st.Name] = st
		p.Graph.AddNode(st.Name)
	}
	for _, e := range s.Edges {
		if !p.Graph.Has(e[0]) || !p.Graph.Has(e[1]) {
			return nil, errors.New("edge names an unknown stage")
		}
		p.Graph.AddEdge(e[0], e[1])
	}
	if err := p.Graph.Check(); err != nil {
		return nil, err
	}
	return p, nil
}

// sortFacts orders facts for a stable snapshot and drops repeats.
func sortFacts(fs []statFact) []statFact {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Path < fs[j].Path })
	out := fs[:0]
	for i, f := range fs {
		if i > 0 && f.Path == fs[i-1].Path {
			continue
		}
		out = append(out, f)
	}
	return out
}
