package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/orch-dev/orch/pkg/stages"
)

func TestZZExplore(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "data"), 0o755)
	os.WriteFile(filepath.Join(root, "data/raw.csv"), []byte("x"), 0o644)
	reg := stages.NewRegistry()
	reg.Register("exec", stages.NewExec(0))
	files, _ := filepath.Glob("/tmp/explore/*.yaml")
	for _, f := range files {
		data, _ := os.ReadFile(f)
		p, err := Parse(filepath.Base(f), data, Options{Root: root, Kinds: reg, Params: map[string]string{}})
		fmt.Printf("=== %s\n", filepath.Base(f))
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("order=%v\n", p.Graph.Order())
		for _, n := range p.Names() {
			s := p.Stages[n]
			fmt.Printf("  %s kind=%s run=%q inputs=%+v outputs=%+v params=%+v needs=%v\n", n, s.KindName, s.Run, s.Inputs, s.Outputs, s.Params, s.Needs)
		}
	}
}
