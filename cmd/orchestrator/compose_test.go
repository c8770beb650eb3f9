package main

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/store"
)

// No Docker engine runs here, so docker-compose.yml and the Dockerfile are
// checked for the structure that makes them work: the services and their
// order, a remote that parses and points at the MinIO service and the
// bucket the init container creates, and a build that makes the binary
// the image runs.

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       string            `yaml:"build"`
		Command     []string          `yaml:"command"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck struct {
			Test     []string `yaml:"test"`
			Interval string   `yaml:"interval"`
			Timeout  string   `yaml:"timeout"`
			Retries  int      `yaml:"retries"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func TestDockerCompose(t *testing.T) {
	root := filepath.Join("..", "..")
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	minio, mc, orch := c.Services["minio"], c.Services["createbucket"], c.Services["orch"]
	if !strings.HasPrefix(minio.Image, "minio/minio") || !slices.Contains(minio.Ports, "9000:9000") || len(minio.Healthcheck.Test) == 0 {
		t.Errorf("minio service: %+v", minio)
	}
	if !strings.HasPrefix(mc.Image, "minio/mc") || mc.DependsOn["minio"].Condition != "service_healthy" {
		t.Errorf("createbucket service: image %q, depends_on %+v", mc.Image, mc.DependsOn)
	}
	if orch.Build != "." || orch.DependsOn["createbucket"].Condition != "service_completed_successfully" {
		t.Errorf("orch service: build %q, depends_on %+v", orch.Build, orch.DependsOn)
	}

	// The remote parses, names the MinIO service's endpoint and the bucket
	// the init container makes, with MinIO's credentials.
	r, err := store.ParseRemote(orch.Environment["ORCH_REMOTE"])
	if err != nil || r.S3 == nil {
		t.Fatalf("ORCH_REMOTE: %v", err)
	}
	if r.S3.Endpoint != "http://minio:9000" || r.S3.PathStyle == nil || !*r.S3.PathStyle {
		t.Errorf("ORCH_REMOTE endpoint %q, path style %v", r.S3.Endpoint, r.S3.PathStyle)
	}
	script := strings.Join(mc.Command, " ")
	if !strings.Contains(script, "mc mb --ignore-existing local/"+r.S3.Bucket) || !strings.Contains(script, "http://minio:9000") {
		t.Errorf("createbucket does not create bucket %q on minio: %s", r.S3.Bucket, script)
	}
	if orch.Environment["AWS_ACCESS_KEY_ID"] != minio.Environment["MINIO_ROOT_USER"] ||
		orch.Environment["AWS_SECRET_ACCESS_KEY"] != minio.Environment["MINIO_ROOT_PASSWORD"] ||
		!strings.Contains(script, minio.Environment["MINIO_ROOT_USER"]+" "+minio.Environment["MINIO_ROOT_PASSWORD"]) {
		t.Errorf("credentials differ between minio, createbucket and orch")
	}
	for _, s := range c.Services {
		for _, v := range s.Volumes {
			name, _, _ := strings.Cut(v, ":")
			if _, ok := c.Volumes[name]; !ok {
				t.Errorf("volume %q is not declared", name)
			}
		}
	}

	// orch runs a pipeline of this repository (a real command, valid
	// pipeline), from the image's working directory.
	if len(orch.Command) != 2 || orch.Command[0] != "run" {
		t.Fatalf("orch command %q; want run PIPELINE", orch.Command)
	}
	abs, _ := filepath.Abs(root)
	if _, err := pipeline.Load(filepath.Join(root, orch.Command[1]), pipeline.Options{Root: abs, Kinds: (&globals{}).registry()}); err != nil {
		t.Errorf("orch command runs %s: %v", orch.Command[1], err)
	}
	if c, _, _ := newRoot().Find(orch.Command[:1]); c == nil || c.Name() != "run" {
		t.Errorf("orch has no %q command", orch.Command[0])
	}
}

func TestDockerfile(t *testing.T) {
	root := filepath.Join("..", "..")
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	var froms, copies []string
	var build, entry, workdir string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		instr, rest, _ := strings.Cut(line, " ")
		switch instr {
		case "FROM":
			froms = append(froms, rest)
		case "COPY":
			copies = append(copies, rest)
		case "RUN":
			if strings.Contains(rest, "go build") {
				build = rest
			}
		case "ENTRYPOINT":
			entry = rest
		case "WORKDIR":
			workdir = rest
		}
	}
	if len(froms) != 2 || !strings.HasPrefix(froms[0], "golang:"+string(goVersion[1])) || !strings.HasSuffix(froms[0], " AS build") {
		t.Errorf("FROM lines %q; want golang:%s… AS build, then the runtime image", froms, goVersion[1])
	}
	if !strings.Contains(build, "-o /out/orch ./cmd/orchestrator") || !strings.Contains(build, "CGO_ENABLED=0") {
		t.Errorf("build: %q", build)
	}
	if !slices.Contains(copies, "--from=build /out/orch /usr/local/bin/orch") {
		t.Errorf("COPY lines %q do not take the binary from the build stage", copies)
	}
	for _, c := range copies {
		if src, _, _ := strings.Cut(c, " "); !strings.HasPrefix(src, "--from") {
			for _, p := range strings.Fields(c)[:len(strings.Fields(c))-1] {
				if _, err := os.Stat(filepath.Join(root, p)); err != nil {
					t.Errorf("COPY %s: %v", c, err)
				}
			}
		}
	}
	if entry != `["orch"]` || workdir != "/work" {
		t.Errorf("ENTRYPOINT %s, WORKDIR %s", entry, workdir)
	}
}
