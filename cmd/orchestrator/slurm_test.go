package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestSlurmScripts runs the end-to-end scripts of the Slurm executor in
// testdata/slurm against the real one-node cluster of scripts/slurm.sh
// (ORCH_TEST_SLURM and SLURM_CONF, which it exports). The scripts in
// testdata/slurm-disruptive take the node down and stop the controller;
// they run after the others, one at a time.
func TestSlurmScripts(t *testing.T) {
	if os.Getenv("ORCH_TEST_SLURM") == "" || os.Getenv("SLURM_CONF") == "" {
		msg := "ORCH_TEST_SLURM is not set: SKIPPING the end-to-end tests on a real Slurm cluster. " +
			`Run them with: eval "$(scripts/slurm.sh start /tmp/orch-slurm)"`
		fmt.Fprintln(os.Stderr, "!!!", msg)
		t.Skip(msg)
	}
	params := func(dir string) testscript.Params {
		return testscript.Params{
			Dir: filepath.Join("testdata", dir),
			Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
				"code":     cmdCode,
				"waitfile": cmdWaitfile,
				"waitgrep": cmdWaitgrep,
			},
			Condition: func(cond string) (bool, error) {
				if cond == "s3" {
					return os.Getenv("ORCH_TEST_S3") != "", nil
				}
				return false, fmt.Errorf("unknown condition %q", cond)
			},
			Setup: func(env *testscript.Env) error {
				for _, k := range []string{"SLURM_CONF", "ORCH_SLURM_DIR"} {
					env.Setenv(k, os.Getenv(k))
				}
				env.Setenv("ORCH_CACHE_DIR", "")
				env.Setenv("ORCH_REMOTE", "")
				// $REMOTE: a fresh prefix on the S3 test server, when there is
				// one (scripts needing it skip otherwise).
				if base := os.Getenv("ORCH_TEST_S3"); base != "" {
					for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE"} {
						if v, ok := os.LookupEnv(k); ok {
							env.Setenv(k, v)
						}
					}
					var b [6]byte
					_, _ = rand.Read(b[:])
					env.Setenv("REMOTE", strings.TrimSuffix(base, "/")+"/slurm-"+hex.EncodeToString(b[:]))
				}
				return raceEnv(env)
			},
		}
	}
	t.Run("shared", func(t *testing.T) { testscript.Run(t, params("slurm")) })
	t.Run("disruptive", func(t *testing.T) {
		p := params("slurm-disruptive")
		ents, err := os.ReadDir(p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		// One script at a time: each disturbs the whole cluster.
		for _, ent := range ents {
			p := p
			p.Files = []string{filepath.Join(p.Dir, ent.Name())}
			p.Dir = ""
			t.Run(ent.Name(), func(t *testing.T) { testscript.Run(t, p) })
		}
	})
}
