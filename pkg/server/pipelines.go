package server

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
)

// loaded is one pipeline file as serve last read it.
type loaded struct {
	file string
	// size and mod identify the version read; a change reloads.
	size int64
	mod  time.Time
	// data and p are the last good version (nil p: never parsed).
	data []byte
	p    *pipeline.Pipeline
	// err is the last reload's error ("" when the file parses).
	err string
}

// catalog holds the pipeline files serve watches. It is safe for
// concurrent use; reload is called from one goroutine.
type catalog struct {
	root  string
	args  []string // DIR or FILE arguments
	kinds *stages.Registry

	mu    sync.Mutex
	files map[string]*loaded // by absolute path
}

// change is what a reload found.
type change struct {
	file    string
	name    string
	err     string // the new error, "" when the file now loads
	loaded  bool   // a new good version
	removed bool   // the file is gone: the pipeline is no longer served
}

// paths lists the pipeline files: FILE arguments as given, and the
// *.yaml / *.yml files directly in each DIR argument.
func (c *catalog) paths() ([]string, error) {
	var out []string
	for _, a := range c.args {
		p := a
		if !filepath.IsAbs(p) {
			if _, err := os.Stat(p); err != nil {
				if _, err2 := os.Stat(filepath.Join(c.root, p)); err2 == nil {
					p = filepath.Join(c.root, p)
				}
			}
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a, unwrapPath(err))
		}
		if !fi.IsDir() {
			out = append(out, abs)
			continue
		}
		ents, err := os.ReadDir(abs)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if n := e.Name(); !e.IsDir() && !strings.HasPrefix(n, ".") && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
				out = append(out, filepath.Join(abs, n))
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

func unwrapPath(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err
	}
	return err
}

// reload re-reads every file whose size or mtime changed, and forgets
// files that are gone. A file that stops parsing keeps its last good
// version, with the error recorded.
func (c *catalog) reload() ([]change, error) {
	paths, err := c.paths()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]*loaded{}
	}
	var changes []change
	seen := map[string]bool{}
	for _, path := range paths {
		seen[path] = true
		fi, err := os.Stat(path)
		if err != nil {
			continue
		}
		l := c.files[path]
		if l == nil {
			l = &loaded{file: path}
			c.files[path] = l
		} else if l.size == fi.Size() && l.mod.Equal(fi.ModTime()) {
			continue
		}
		l.size, l.mod = fi.Size(), fi.ModTime()
		data, err := os.ReadFile(path)
		var p *pipeline.Pipeline
		if err == nil {
			p, err = pipeline.Parse(path, data, pipeline.Options{Root: c.root, Kinds: c.kinds})
		}
		if err == nil {
			if other := c.byNameLocked(p.Name); other != nil && other != l {
				err = fmt.Errorf("%s: pipeline %q is also defined in %s; keeping that one", path, p.Name, other.file)
			}
		}
		name := ""
		if l.p != nil {
			name = l.p.Name
		}
		if err != nil {
			if msg := err.Error(); msg != l.err {
				l.err = msg
				changes = append(changes, change{file: path, name: name, err: msg})
			}
			continue
		}
		l.data, l.p, l.err = data, p, ""
		changes = append(changes, change{file: path, name: p.Name, loaded: true})
	}
	for path, l := range c.files {
		if !seen[path] {
			delete(c.files, path)
			name := ""
			if l.p != nil {
				name = l.p.Name
			}
			changes = append(changes, change{file: path, name: name, removed: true})
		}
	}
	return changes, nil
}

func (c *catalog) byNameLocked(name string) *loaded {
	for _, l := range c.files {
		if l.p != nil && l.p.Name == name {
			return l
		}
	}
	return nil
}

// snapshot returns the files, sorted by pipeline name (files that never
// parsed last, by path).
func (c *catalog) snapshot() []loaded {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]loaded, 0, len(c.files))
	for _, l := range c.files {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.p == nil) != (b.p == nil) {
			return a.p != nil
		}
		if a.p != nil && a.p.Name != b.p.Name {
			return a.p.Name < b.p.Name
		}
		return a.file < b.file
	})
	return out
}

// get returns the last good version of pipeline name.
func (c *catalog) get(name string) (loaded, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.byNameLocked(name); l != nil {
		return *l, true
	}
	return loaded{}, false
}

// instantiate parses the last good version of pipeline name again with
// param overrides (a tick's params, a trigger's).
func (c *catalog) instantiate(name string, params map[string]string) (*pipeline.Pipeline, error) {
	l, ok := c.get(name)
	if !ok {
		return nil, fmt.Errorf("no such pipeline %q", name)
	}
	if len(params) == 0 {
		return l.p, nil
	}
	return pipeline.Parse(l.file, l.data, pipeline.Options{Root: c.root, Params: params, Kinds: c.kinds})
}
