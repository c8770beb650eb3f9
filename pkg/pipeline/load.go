package pipeline

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/orch-dev/orch/pkg/dag"
	"github.com/orch-dev/orch/pkg/stages"
)

// Limits on what a pipeline file may be, so hostile YAML cannot exhaust
// memory or time.
const (
	MaxFileSize = 8 << 20
	MaxDepth    = 64
	MaxNodes    = 200_000 // after alias expansion
)

// Options controls Load.
type Options struct {
	// Root is the workspace root; "" means the current directory.
	Root string
	// Params override pipeline params by name (`-p name=value`).
	Params map[string]string
	// Kinds binds `kind:` names to implementations.
	Kinds *stages.Registry
	// Executor, if set, runs every stage there (`--executor`).
	Executor string
	// SnapshotDir, if set, is where Load keeps a snapshot of each pipeline
	// it loaded, to skip parsing an unchanged file next time (snapshot.go).
	SnapshotDir string
}

var (
	pipelineNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	stageNameRE    = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	identRE        = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	interpRE       = regexp.MustCompile(`\$\{\s*([^{}]*?)\s*\}`)
	yamlLineRE     = regexp.MustCompile(`line (\d+)(?::(\d+))?`)
)

var (
	topKeys   = []string{"name", "version", "description", "params", "stages", "cache", "schedule", "on_failure", "executor", "slurm"}
	stageKeys = []string{"kind", "run", "description", "code", "inputs", "outputs", "params", "env", "timeout", "retries", "cache", "needs", "executor", "resources"}
)

// Load reads and validates the pipeline file at file.
func Load(file string, opts Options) (*Pipeline, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, Errors{{File: file, Msg: fmt.Sprintf("cannot read pipeline: %v", errors.Unwrap(err))}}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, Errors{{File: file, Msg: fmt.Sprintf("cannot read pipeline: %v", err)}}
	}
	if len(data) > MaxFileSize {
		return nil, Errors{{File: file, Msg: fmt.Sprintf("pipeline file is larger than %d MiB", MaxFileSize>>20)}}
	}
	if opts.SnapshotDir == "" || opts.Kinds == nil {
		return Parse(file, data, opts)
	}
	absFile, err1 := filepath.Abs(file)
	root, err2 := filepath.Abs(cmp.Or(opts.Root, "."))
	if err1 != nil || err2 != nil {
		return Parse(file, data, opts)
	}
	key := snapshotKey(absFile, data, opts, root)
	path := snapshotPath(opts.SnapshotDir, absFile)
	if p := loadSnapshot(path, key, opts); p != nil {
		p.Overrides = opts.Params
		return p, nil
	}
	p, l, err := parseFile(file, data, opts)
	if err == nil {
		saveSnapshot(path, key, p, sortFacts(l.facts))
	}
	return p, err
}

type loader struct {
	file  string
	lines []string
	opts  Options
	root  string
	errs  Errors
	nodes int
	// pparams are the pipeline params, once read.
	pparams map[string]stages.Param
	// stageNames are the stage names, sorted, once read.
	stageNames   []string
	suggestCells int
	// facts are the file-system checks made, for the snapshot.
	facts []statFact
}

func (l *loader) errAt(n *yaml.Node, format string, args ...any) {
	e := &ConfigError{File: l.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Col = n.Line, n.Column
		e.Snippet = snippet(l.lines, n.Line, n.Column)
	}
	l.errs = append(l.errs, e)
}

// Parse validates pipeline YAML read from file.
func Parse(file string, data []byte, opts Options) (*Pipeline, error) {
	p, _, err := parseFile(file, data, opts)
	return p, err
}

func parseFile(file string, data []byte, opts Options) (*Pipeline, *loader, error) {
	l := &loader{file: file, lines: strings.Split(string(data), "\n"), opts: opts}
	root := opts.Root
	if root == "" {
		root = "."
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, l, Errors{{File: file, Msg: err.Error()}}
	}
	l.root = abs
	if opts.Kinds == nil {
		return nil, l, Errors{{File: file, Msg: "no stage kinds registered"}}
	}

	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, l, Errors{{File: file, Msg: "empty pipeline file"}}
		}
		return nil, l, Errors{l.yamlError(err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		l.errAt(&extra, "a pipeline file holds one YAML document; found another")
		return nil, l, l.errs
	} else if !errors.Is(err, io.EOF) {
		return nil, l, Errors{l.yamlError(err)}
	}
	if len(doc.Content) == 0 {
		return nil, l, Errors{{File: file, Msg: "empty pipeline file"}}
	}
	if !l.budget(doc.Content[0], 0) {
		return nil, l, l.errs
	}
	p := l.pipeline(doc.Content[0])
	l.executors(p)
	if len(l.errs) > 0 {
		return nil, l, l.errs.sorted()
	}
	p.File, _ = filepath.Abs(file)
	return p, l, nil
}

func (l *loader) yamlError(err error) *ConfigError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &ConfigError{File: l.file, Msg: "invalid YAML: " + msg}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		if m[2] != "" {
			e.Col, _ = strconv.Atoi(m[2])
		} else {
			e.Col = 1
		}
		e.Snippet = snippet(l.lines, e.Line, e.Col)
		e.Msg = "invalid YAML: " + strings.TrimSpace(yamlLineRE.ReplaceAllString(msg, ""))
		e.Msg = strings.TrimPrefix(strings.TrimPrefix(e.Msg, "invalid YAML: :"), " ")
		if !strings.HasPrefix(e.Msg, "invalid YAML") {
			e.Msg = "invalid YAML: " + e.Msg
		}
		l.refineSyntaxError(e, yamlMessage(err))
	}
	return e
}

// budget rejects documents nested too deeply or expanding, through aliases,
// to too many nodes, before anything else looks at them.
func (l *loader) budget(n *yaml.Node, depth int) bool {
	l.nodes++
	if l.nodes > MaxNodes {
		l.errAt(n, "document expands to more than %d nodes (through aliases?); refusing to expand it", MaxNodes)
		return false
	}
	if depth > MaxDepth {
		l.errAt(n, "document is nested more than %d levels deep", MaxDepth)
		return false
	}
	if n.Kind == yaml.AliasNode {
		return l.budget(n.Alias, depth+1)
	}
	for _, c := range n.Content {
		if !l.budget(c, depth+1) {
			return false
		}
	}
	return true
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// mapping calls fn for every key of mapping n in order, reporting unknown
// and duplicate keys. allowed == nil allows any key.
func (l *loader) mapping(n *yaml.Node, what string, allowed []string, fn func(key string, k, v *yaml.Node)) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		l.errAt(n, "%s must be a mapping, got %s", what, kindName(n))
		return
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			l.errAt(k, "%s: keys must be plain strings", what)
			continue
		}
		if k.Value == "<<" {
			l.errAt(k, "%s: merge keys (<<) are not supported", what)
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			l.errAt(k, "duplicate key %q in %s (first at line %d)", k.Value, what, prev.Line)
			continue
		}
		seen[k.Value] = k
		if allowed != nil && !contains(allowed, k.Value) {
			l.errAt(k, "unknown key %q in %s%s", k.Value, what, l.didYouMean(k.Value, allowed))
			continue
		}
		fn(k.Value, k, v)
	}
}

func contains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

func (l *loader) str(n *yaml.Node, what string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		l.errAt(n, "%s must be a string, got %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

// strList accepts a list of strings or a single string.
func (l *loader) strList(n *yaml.Node, what string) []*yaml.Node {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		return []*yaml.Node{n}
	}
	if n.Kind != yaml.SequenceNode {
		l.errAt(n, "%s must be a list of strings, got %s", what, kindName(n))
		return nil
	}
	var out []*yaml.Node
	for _, c := range n.Content {
		c = resolve(c)
		if c.Kind != yaml.ScalarNode || c.Tag == "!!null" {
			l.errAt(c, "%s: each entry must be a string, got %s", what, kindName(c))
			continue
		}
		out = append(out, c)
	}
	return out
}

type stageSpec struct {
	name    string
	key     *yaml.Node
	fields  map[string]*yaml.Node // field key nodes, for positions
	values  map[string]*yaml.Node // field value nodes
	inputs  []inputSpec
	outputs []outputSpec
	pnodes  map[string]*yaml.Node
}

type inputSpec struct {
	name      string
	key, node *yaml.Node
	value     string
}

type outputSpec struct {
	name      string
	key, node *yaml.Node
	value     string
}

func (l *loader) pipeline(root *yaml.Node) *Pipeline {
	p := &Pipeline{Root: l.root, Params: map[string]stages.Param{}, Stages: map[string]*Stage{}, Graph: dag.New(), Slurm: DefaultSlurm}
	var stagesNode, nameNode, scheduleNode *yaml.Node
	l.mapping(root, "the pipeline", topKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "name":
			nameNode = k
			if s, ok := l.str(v, "name"); ok {
				if !pipelineNameRE.MatchString(s) {
					l.errAt(v, "pipeline name %q must match [a-z0-9][a-z0-9_-]*", s)
				}
				p.Name = s
			}
		case "version":
			if vv := resolve(v); vv.Value != "1" {
				l.errAt(v, "unsupported pipeline version %s (this orch reads version 1)", kindName(vv))
			}
		case "description":
			p.Description, _ = l.str(v, "description")
		case "params":
			l.mapping(v, "params", nil, func(name string, k, v *yaml.Node) {
				if !identRE.MatchString(name) {
					l.errAt(k, "param name %q must match [A-Za-z_][A-Za-z0-9_]*", name)
					return
				}
				p.Params[name] = l.param(v, nil)
			})
		case "stages":
			stagesNode = v
		case "cache":
			p.Cache = l.cacheSection(v)
		case "schedule":
			scheduleNode = v
		case "on_failure":
			p.OnFailure = l.onFailure(v)
		case "executor":
			p.Executor = l.executorName(v)
		case "slurm":
			p.Slurm = l.slurmSection(v)
		}
	})
	if r := resolve(root); r.Kind != yaml.MappingNode {
		if r.Kind == yaml.ScalarNode && r.Tag == "!!null" {
			l.errAt(root, "the pipeline is empty: it needs name: and stages:")
		}
		return p
	}
	if nameNode == nil {
		l.errAt(root, "missing required key \"name\"")
	}
	for _, name := range sortedKeys(l.opts.Params) {
		text := l.opts.Params[name]
		if _, ok := p.Params[name]; !ok {
			var have []string
			for k := range p.Params {
				have = append(have, k)
			}
			sort.Strings(have)
			l.errs = append(l.errs, &ConfigError{File: l.file, Msg: fmt.Sprintf("-p %s: the pipeline has no param %q%s (params: %s)", name, name, l.didYouMean(name, have), strings.Join(have, ", "))})
			continue
		}
		p.Params[name] = paramFromText(text)
	}
	l.pparams = p.Params
	p.Overrides = l.opts.Params
	if scheduleNode != nil {
		p.Schedule = l.schedule(scheduleNode, p.Params)
	}
	if stagesNode == nil {
		l.errAt(root, "missing required key \"stages\"")
		return p
	}
	if sn := resolve(stagesNode); sn.Kind == yaml.ScalarNode && sn.Tag == "!!null" {
		l.errAt(stagesNode, "the pipeline has no stages")
		return p
	}

	// First pass: stage names, so inputs can tell references from paths.
	var specs []*stageSpec
	names := map[string]bool{}
	l.mapping(stagesNode, "stages", nil, func(name string, k, v *yaml.Node) {
		if !stageNameRE.MatchString(name) {
			l.errAt(k, "stage name %q must match [A-Za-z0-9_-]+", name)
			return
		}
		names[name] = true
		specs = append(specs, &stageSpec{name: name, key: k, values: map[string]*yaml.Node{"": v}})
	})
	l.stageNames = keys(names)
	if len(specs) == 0 && resolve(stagesNode).Kind == yaml.MappingNode {
		l.errAt(stagesNode, "the pipeline has no stages")
	}
	for _, s := range specs {
		st := l.stage(p, s)
		p.Stages[s.name] = st
		p.Graph.AddNode(s.name)
	}
	// Second pass: references.
	for _, s := range specs {
		st := p.Stages[s.name]
		for i, in := range s.inputs {
			up, out, isRef := strings.Cut(in.value, ".")
			if !isRef || !names[up] {
				continue
			}
			ust := p.Stages[up]
			if up == s.name {
				l.errAt(in.node, "input %q: stage %q cannot read its own output", in.name, up)
				continue
			}
			if !hasOutput(ust, out) {
				var have []string
				for _, o := range ust.Outputs {
					have = append(have, o.Name)
				}
				l.errAt(in.node, "input %q: stage %q has no output %q%s (outputs: %s)", in.name, up, out, l.didYouMean(out, have), strings.Join(have, ", "))
				continue
			}
			st.Inputs[i].Stage, st.Inputs[i].Output, st.Inputs[i].Path = up, out, ""
			p.Graph.AddEdge(up, s.name)
		}
		for _, n := range l.strList(s.valueOf("needs"), "needs") {
			switch {
			case n.Value == s.name:
				l.errAt(n, "needs: stage %q cannot need itself", n.Value)
			case !names[n.Value]:
				l.errAt(n, "needs: no stage named %q%s", n.Value, l.didYouMean(n.Value, l.stageNames))
			default:
				st.Needs = append(st.Needs, n.Value)
				p.Graph.AddEdge(n.Value, s.name)
			}
		}
	}
	// Plain workspace inputs must exist (checked after references resolve).
	for _, s := range specs {
		for i, in := range p.Stages[s.name].Inputs {
			if in.IsRef() {
				continue
			}
			l.checkInputPath(s.inputs[i], in.Path, names)
		}
	}
	if err := p.Graph.Check(); err != nil {
		cycle := strings.TrimPrefix(err.Error(), dag.ErrCycle.Error()+": ")
		first, _, _ := strings.Cut(cycle, " → ")
		var at *yaml.Node
		for _, s := range specs {
			if s.name == first {
				at = s.key
			}
		}
		l.errAt(at, "stages form a cycle: %s", cycle)
	}
	return p
}

func keys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func hasOutput(st *Stage, name string) bool {
	for _, o := range st.Outputs {
		if o.Name == name {
			return true
		}
	}
	return false
}

func (s *stageSpec) valueOf(field string) *yaml.Node {
	if v, ok := s.values[field]; ok {
		return v
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
}

func (l *loader) stage(p *Pipeline, s *stageSpec) *Stage {
	st := &Stage{Name: s.name, Cache: true, Params: map[string]stages.Param{}}
	s.fields = map[string]*yaml.Node{}
	s.pnodes = map[string]*yaml.Node{}
	what := fmt.Sprintf("stage %q", s.name)
	l.mapping(s.values[""], what, stageKeys, func(key string, k, v *yaml.Node) {
		s.fields[key], s.values[key] = k, v
		switch key {
		case "kind":
			st.KindName, _ = l.str(v, "kind")
		case "run":
			if r, ok := l.str(v, "run"); ok {
				st.Run = l.interp(v, r)
			}
		case "description":
			p.Description, _ = l.str(v, "description")
		case "code":
			for _, n := range l.strList(v, "code") {
				c := l.interp(n, n.Value)
				if msg := checkRelPath(c); msg != "" {
					l.errAt(n, "code %q: %s", c, msg)
					continue
				}
				if _, err := filepath.Match(c, ""); err != nil {
					l.errAt(n, "code %q: bad pattern: %v", c, err)
					continue
				}
				if !strings.ContainsAny(c, "*?[") {
					if err := l.stat(filepath.Join(l.root, c)); err != nil {
						l.errAt(n, "code %q: file does not exist in the workspace %s", c, l.root)
						continue
					}
				}
				st.Code = append(st.Code, path.Clean(c))
			}
		case "inputs":
			l.mapping(v, what+" inputs", nil, func(name string, k, v *yaml.Node) {
				if !stageNameRE.MatchString(name) {
					l.errAt(k, "input name %q must match [A-Za-z0-9_-]+", name)
					return
				}
				if val, ok := l.str(v, "input "+name); ok {
					val = l.interp(v, val)
					if val == "" {
						l.errAt(v, "input %q is empty: give a workspace path or STAGE.OUTPUT", name)
						return
					}
					s.inputs = append(s.inputs, inputSpec{name: name, key: k, node: v, value: val})
				}
			})
		case "outputs":
			l.mapping(v, what+" outputs", nil, func(name string, k, v *yaml.Node) {
				if !stageNameRE.MatchString(name) {
					l.errAt(k, "output name %q must match [A-Za-z0-9_-]+", name)
					return
				}
				if val, ok := l.str(v, "output "+name); ok {
					s.outputs = append(s.outputs, outputSpec{name: name, key: k, node: v, value: val})
				}
			})
		case "params":
			l.mapping(v, what+" params", nil, func(name string, k, v *yaml.Node) {
				if !identRE.MatchString(name) {
					l.errAt(k, "param name %q must match [A-Za-z_][A-Za-z0-9_]*", name)
					return
				}
				st.Params[name] = l.param(v, p.Params)
				s.pnodes[name] = v
			})
		case "env":
			for _, n := range l.strList(v, "env") {
				if !identRE.MatchString(n.Value) {
					l.errAt(n, "env: %q is not a variable name", n.Value)
					continue
				}
				st.Env = append(st.Env, n.Value)
			}
			sort.Strings(st.Env)
		case "timeout":
			if t, ok := l.str(v, "timeout"); ok {
				d, err := time.ParseDuration(t)
				if err != nil || d <= 0 {
					l.errAt(v, "timeout %q is not a positive duration (examples: 90s, 10m, 1h30m)", t)
				}
				st.Timeout = d
			}
		case "retries":
			vv := resolve(v)
			n, err := strconv.Atoi(vv.Value)
			if vv.Kind != yaml.ScalarNode || err != nil || n < 0 || n > 100 {
				l.errAt(v, "retries must be a whole number from 0 to 100, got %s", kindName(vv))
			}
			st.Retries = n
		case "cache":
			vv := resolve(v)
			b, err := strconv.ParseBool(vv.Value)
			if vv.Kind != yaml.ScalarNode || vv.Tag != "!!bool" || err != nil {
				l.errAt(v, "cache must be true or false, got %s", kindName(vv))
			}
			st.Cache = b
		case "executor":
			st.Executor = l.executorName(v)
		case "resources":
			st.Resources = l.resources(v)
		}
	})
	// Inputs: references are resolved by the caller; here every value is a
	// path until proven otherwise.
	for _, in := range s.inputs {
		st.Inputs = append(st.Inputs, Input{Name: in.name, Source: in.value, Path: filepath.Clean(in.value)})
	}
	rejected := map[string]bool{} // outputs with bad paths: reported once
	for _, o := range s.outputs {
		if msg := checkRelPath(o.value); msg != "" {
			l.errAt(o.node, "output %q: path %q %s", o.name, o.value, msg)
			rejected[o.name] = true
			continue
		}
		clean := path.Clean(o.value)
		overlap := false
		for _, prev := range st.Outputs { // declaration order: deterministic
			if clean == prev.Path || strings.HasPrefix(clean, prev.Path+"/") || strings.HasPrefix(prev.Path, clean+"/") {
				l.errAt(o.node, "output %q: path %q overlaps output %q (%s)", o.name, clean, prev.Name, prev.Path)
				rejected[o.name] = true
				overlap = true
				break
			}
		}
		if !overlap {
			st.Outputs = append(st.Outputs, Output{Name: o.name, Path: clean})
		}
	}
	// Kind.
	if st.KindName == "" {
		if _, hasRun := s.values["run"]; hasRun {
			st.KindName = "exec"
		} else {
			l.errAt(s.key, "stage %q needs a command (run:) or a built-in kind (kind:)", s.name)
			return st
		}
	}
	kind, ok := l.opts.Kinds.Lookup(st.KindName)
	if !ok {
		l.errAt(s.values["kind"], "unknown kind %q%s (kinds: %s)", st.KindName, l.didYouMean(st.KindName, l.opts.Kinds.Names()), strings.Join(l.opts.Kinds.Names(), ", "))
		return st
	}
	st.Kind = kind
	decl := &stages.Decl{Stage: s.name, Run: st.Run, Params: st.Params}
	for _, in := range st.Inputs {
		decl.Inputs = append(decl.Inputs, in.Name)
	}
	for _, o := range st.Outputs {
		decl.Outputs = append(decl.Outputs, o.Name)
	}
	for name := range rejected {
		decl.Outputs = append(decl.Outputs, name)
	}
	sort.Strings(decl.Outputs)
	for _, pr := range kind.Check(decl) {
		l.errAt(s.field(pr.Field), "stage %q: %s", s.name, pr.Msg)
	}
	// A kind may declare fixed outputs it always writes.
	for _, name := range decl.Outputs {
		if !hasOutput(st, name) && !rejected[name] {
			st.Outputs = append(st.Outputs, Output{Name: name, Path: name})
		}
	}
	sort.Slice(st.Inputs, func(i, j int) bool { return st.Inputs[i].Name < st.Inputs[j].Name })
	sort.Slice(s.inputs, func(i, j int) bool { return s.inputs[i].name < s.inputs[j].name })
	sort.Slice(st.Outputs, func(i, j int) bool { return st.Outputs[i].Name < st.Outputs[j].Name })
	return st
}

// field returns the node to point at for a Problem's dotted field path.
func (s *stageSpec) field(f string) *yaml.Node {
	head, rest, _ := strings.Cut(f, ".")
	if head == "params" && rest != "" {
		if n, ok := s.pnodes[rest]; ok {
			return n
		}
	}
	if n, ok := s.values[head]; ok && head != "" {
		return n
	}
	return s.key
}

func (l *loader) checkInputPath(in inputSpec, p string, names map[string]bool) {
	up, _, isRef := strings.Cut(in.value, ".")
	if isRef && names[up] {
		return // a reference; resolving it reported any problem
	}
	if isRef && up != "" && !strings.ContainsAny(up, "/") {
		if m := l.suggest(up, l.stageNames); m != "" {
			if err := l.stat(filepath.Join(l.root, p)); err != nil {
				l.errAt(in.node, "input %q: no stage named %q (did you mean %q?) and no file %s in the workspace", in.name, up, m, p)
				return
			}
		}
	}
	full := p
	if !filepath.IsAbs(full) {
		full = filepath.Join(l.root, p)
	}
	if rel, err := filepath.Rel(l.root, full); err == nil && (rel == ".orch" || strings.HasPrefix(rel, ".orch"+string(filepath.Separator))) {
		l.errAt(in.node, "input %q: %s is inside orch's state directory; read an upstream output as STAGE.OUTPUT instead", in.name, p)
		return
	}
	if err := l.stat(full); err != nil {
		why := "does not exist"
		if !errors.Is(err, os.ErrNotExist) {
			why = err.Error()
		}
		l.errAt(in.node, "input %q: %s %s (workspace %s); an upstream output is written STAGE.OUTPUT", in.name, p, why, l.root)
	}
}

// checkRelPath returns why p cannot be a path inside a directory, or "".
func checkRelPath(p string) string {
	switch {
	case p == "":
		return "is empty"
	case strings.HasPrefix(p, "/"):
		return "is absolute; it must be relative"
	case strings.Contains(p, "\x00"):
		return "contains a NUL byte"
	}
	c := path.Clean(p)
	if c == "." {
		return "names the directory itself"
	}
	if c == ".." || strings.HasPrefix(c, "../") {
		return "escapes with '..'"
	}
	return ""
}

// interp replaces ${params.NAME} in s with pipeline param text.
func (l *loader) interp(n *yaml.Node, s string) string {
	if !strings.Contains(s, "${") {
		return s
	}
	return interpRE.ReplaceAllStringFunc(s, func(m string) string {
		ref := interpRE.FindStringSubmatch(m)[1]
		name, ok := strings.CutPrefix(ref, "params.")
		if !ok {
			return m // ${HOME}, ${ORCH_OUTPUT_X}: the shell's, not ours
		}
		p, ok := l.pipelineParams()[name]
		if !ok {
			l.errAt(n, "unknown pipeline param %q in ${%s}%s", name, ref, l.didYouMean(name, sortedKeys(l.pipelineParams())))
			return m
		}
		return p.Text
	})
}

// pipelineParams is set while stages are parsed.
func (l *loader) pipelineParams() map[string]stages.Param { return l.pparams }

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// param converts a YAML value into a Param, interpolating ${params.X} with
// pp (nil while the pipeline params themselves are read).
func (l *loader) param(n *yaml.Node, pp map[string]stages.Param) stages.Param {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode {
		if pp != nil {
			if m := interpRE.FindStringSubmatch(n.Value); m != nil && m[0] == n.Value {
				if name, ok := strings.CutPrefix(m[1], "params."); ok {
					if p, ok := pp[name]; ok {
						return p
					}
				}
			}
			if strings.Contains(n.Value, "${") {
				text := l.interp(n, n.Value)
				return stages.Param{Text: text, Value: text}
			}
		}
		var v any
		_ = n.Decode(&v)
		return stages.Param{Text: n.Value, Value: v}
	}
	v := l.plain(n, pp)
	b, err := json.Marshal(v)
	if err != nil {
		l.errAt(n, "param cannot be encoded: %v", err)
	}
	return stages.Param{Text: string(b), Value: v}
}

// plain converts a YAML value into plain Go values with interpolation.
func (l *loader) plain(n *yaml.Node, pp map[string]stages.Param) any {
	n = resolve(n)
	switch n.Kind {
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			out = append(out, l.plain(c, pp))
		}
		return out
	case yaml.MappingNode:
		out := map[string]any{}
		l.mapping(n, "param", nil, func(k string, _, v *yaml.Node) { out[k] = l.plain(v, pp) })
		return out
	}
	return l.param(n, pp).Value
}

func paramFromText(text string) stages.Param {
	var v any
	if err := yaml.Unmarshal([]byte(text), &v); err != nil {
		v = text
	}
	switch v.(type) {
	case map[string]any, []any:
		v = text // -p values are scalars
	}
	return stages.Param{Text: text, Value: v}
}
