package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
)

// Deploy publishes a model and its validation report as a release:
//
//	DIR/<pipeline>/<version>/model.json, report.json, release.json
//	DIR/<pipeline>/latest -> <version>    (a symlink, swapped atomically)
//	DIR/<pipeline>/history.jsonl          (one line per publish or rollback)
//
// The version is derived from the model's digest, so publishing a model that
// is already published changes nothing but the latest pointer (and not even
// that when it is already latest). Releases are never deleted by deploy.
type Deploy struct {
	now func() time.Time
}

// NewDeploy returns the deploy kind.
func NewDeploy() *Deploy { return &Deploy{now: time.Now} }

// DeployParams are the params of a deploy stage.
type DeployParams struct {
	// Dir is the release root, relative to the workspace. Default "models".
	Dir string `json:"dir"`
}

// Version implements Kind.
func (*Deploy) Version() string { return "orch.deploy.v1" }

// Check implements Kind.
func (*Deploy) Check(d *Decl) []Problem {
	var p DeployParams
	ps := DecodeParams(d.Params, &p)
	if p.Dir != "" && (filepath.IsAbs(p.Dir) || strings.HasPrefix(filepath.Clean(p.Dir), "..")) {
		ps = append(ps, Problem{Field: "params.dir", Msg: fmt.Sprintf("param dir %q must be a relative path inside the workspace", p.Dir)})
	}
	ps = append(ps, fixedIO(d, []string{"model", "report"}, []string{"release"})...)
	return ps
}

// fixedIO checks that a built-in stage declares exactly the inputs it reads
// and sets its fixed outputs.
func fixedIO(d *Decl, inputs, outputs []string) []Problem {
	var ps []Problem
	have := map[string]bool{}
	for _, in := range d.Inputs {
		have[in] = true
		if !contains(inputs, in) {
			ps = append(ps, Problem{Field: "inputs", Msg: fmt.Sprintf("unknown input %q (this kind reads: %s)", in, strings.Join(inputs, ", "))})
		}
	}
	for _, in := range inputs {
		if !have[in] {
			ps = append(ps, Problem{Field: "inputs", Msg: fmt.Sprintf("missing input %q (this kind reads: %s)", in, strings.Join(inputs, ", "))})
		}
	}
	for _, o := range d.Outputs {
		if !contains(outputs, o) {
			ps = append(ps, Problem{Field: "outputs", Msg: fmt.Sprintf("output %q: this kind writes only %s", o, strings.Join(outputs, ", "))})
		}
	}
	d.Outputs = append([]string(nil), outputs...)
	return ps
}

func contains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

// Release describes one published release.
type Release struct {
	Version   string    `json:"version"`
	Pipeline  string    `json:"pipeline"`
	Model     string    `json:"model_digest"`
	Published time.Time `json:"published"`
	// Metrics are copied from the report's top-level numbers, if any.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	Latest  bool               `json:"-"`
}

type historyLine struct {
	Time    time.Time `json:"time"`
	Action  string    `json:"action"` // publish | rollback
	Version string    `json:"version"`
}

// Run implements Kind.
func (k *Deploy) Run(_ context.Context, t *Task) error {
	var p DeployParams
	if ps := DecodeParams(t.Params, &p); len(ps) > 0 {
		return errors.New(ps[0].Msg)
	}
	if p.Dir == "" {
		p.Dir = "models"
	}
	root := filepath.Join(t.Dir, p.Dir, t.Pipeline)
	model, err := os.ReadFile(t.Inputs["model"])
	if err != nil {
		return fmt.Errorf("read model: %w", err)
	}
	report, err := os.ReadFile(t.Inputs["report"])
	if err != nil {
		return fmt.Errorf("read report: %w", err)
	}
	d := digest.Bytes(model)
	rel := Release{Version: releaseVersion(d), Pipeline: t.Pipeline, Model: d.String(), Published: k.now().UTC(), Metrics: topNumbers(report)}
	relJSON, _ := json.MarshalIndent(rel, "", "  ")

	// The stage's own output: the release content.
	out := t.Outputs["release"]
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for name, b := range map[string][]byte{"model.json": model, "report.json": report, "release.json": relJSON} {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return err
		}
	}

	// The side effect: publish into the workspace, atomically.
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("release directory %s: %w", root, err)
	}
	final := filepath.Join(root, rel.Version)
	_, statErr := os.Stat(final)
	switch {
	case statErr == nil && releaseIntact(final, d):
		fmt.Fprintf(t.Log, "deploy: %s already published (model %s)\n", rel.Version, d.Short())
	default:
		tmp, err := os.MkdirTemp(root, ".publish-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		// A release is what serving reads: its files are on disk before
		// the rename makes it visible, and the rename before latest moves.
		for name, b := range map[string][]byte{"model.json": model, "report.json": report, "release.json": relJSON} {
			if err := writeSynced(filepath.Join(tmp, name), b, 0o444); err != nil {
				return err
			}
		}
		if err := syncDir(tmp); err != nil {
			return err
		}
		broken := ""
		if statErr == nil {
			// Published once, but its files are not the model any more
			// (cut short by a crash, or edited): moved aside, once the
			// new copy is ready, and put back if that cannot take its
			// place.
			broken = filepath.Join(root, fmt.Sprintf(".broken-%s-%d", rel.Version, k.now().UnixNano()))
			if err := os.Rename(final, broken); err != nil {
				return fmt.Errorf("move aside damaged release %s: %w", final, err)
			}
			fmt.Fprintf(t.Log, "deploy: %s was published but its model.json is not model %s; publishing it again\n", rel.Version, d.Short())
		}
		if err := os.Rename(tmp, final); err != nil {
			if broken != "" {
				_ = os.Rename(broken, final)
			}
			return fmt.Errorf("publish %s: %w", final, err)
		}
		if broken != "" {
			_ = os.RemoveAll(broken)
		}
		if err := syncDir(root); err != nil {
			return err
		}
		if err := appendHistory(root, historyLine{Time: rel.Published, Action: "publish", Version: rel.Version}); err != nil {
			return err
		}
		fmt.Fprintf(t.Log, "deploy: published %s at %s\n", rel.Version, final)
	}
	if cur, _ := os.Readlink(filepath.Join(root, "latest")); cur == rel.Version {
		return nil
	}
	if err := pointLatest(root, rel.Version); err != nil {
		return err
	}
	fmt.Fprintf(t.Log, "deploy: latest → %s\n", rel.Version)
	return nil
}

// releaseIntact reports whether the release directory dir holds model d
// and a release.json that parses.
func releaseIntact(dir string, d digest.Digest) bool {
	m, err := os.ReadFile(filepath.Join(dir, "model.json"))
	if err != nil || digest.Bytes(m) != d {
		return false
	}
	var rel Release
	b, err := os.ReadFile(filepath.Join(dir, "release.json"))
	return err == nil && json.Unmarshal(b, &rel) == nil && rel.Model == d.String()
}

// writeSynced writes b to a new file at path and flushes it to disk.
func writeSynced(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir flushes directory dir's entries to disk.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// topNumbers returns the top-level numeric fields of a JSON report.
func topNumbers(report []byte) map[string]float64 {
	var m map[string]any
	if json.Unmarshal(report, &m) != nil {
		return nil
	}
	out := map[string]float64{}
	for k, v := range m {
		if f, ok := v.(float64); ok {
			out[k] = f
		}
	}
	return out
}

// pointLatest swaps the latest symlink to version atomically (a new symlink
// renamed over the old one).
func pointLatest(root, version string) error {
	tmp := filepath.Join(root, fmt.Sprintf(".latest-%d", os.Getpid()))
	_ = os.Remove(tmp)
	if err := os.Symlink(version, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(root, "latest")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("move latest pointer: %w", err)
	}
	return syncDir(root)
}

func appendHistory(root string, l historyLine) error {
	f, err := os.OpenFile(filepath.Join(root, "history.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(l)
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

var versionRE = regexp.MustCompile(`^v-[0-9a-f]{12}$`)

// Releases lists the releases of pipeline under dir (the deploy stage's
// release root, absolute), oldest first, marking the latest.
func Releases(dir, pipeline string) ([]Release, error) {
	root := filepath.Join(dir, pipeline)
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pipeline %s has no releases under %s", pipeline, dir)
		}
		return nil, err
	}
	latest, _ := os.Readlink(filepath.Join(root, "latest"))
	var rs []Release
	for _, e := range ents {
		if !e.IsDir() || !versionRE.MatchString(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, e.Name(), "release.json"))
		if err != nil {
			return nil, fmt.Errorf("release %s: %w", e.Name(), err)
		}
		var r Release
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("release %s: release.json: %w", e.Name(), err)
		}
		r.Latest = r.Version == latest
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Published.Before(rs[j].Published) })
	return rs, nil
}

// Rollback points pipeline's latest release back at version, which must
// exist, and records it in the history.
func Rollback(dir, pipeline, version string, now time.Time) error {
	root := filepath.Join(dir, pipeline)
	if !versionRE.MatchString(version) {
		return fmt.Errorf("%q is not a release version (they look like v-1a2b3c4d5e6f; orch releases lists them)", version)
	}
	if _, err := os.Stat(filepath.Join(root, version, "release.json")); err != nil {
		return fmt.Errorf("pipeline %s has no release %s under %s", pipeline, version, dir)
	}
	if err := pointLatest(root, version); err != nil {
		return err
	}
	return appendHistory(root, historyLine{Time: now.UTC(), Action: "rollback", Version: version})
}
