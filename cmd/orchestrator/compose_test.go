package main

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
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
		Hostname    string            `yaml:"hostname"`
		StopGrace   string            `yaml:"stop_grace_period"`
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

	// orch serves the pipelines of this repository (real command, valid
	// pipelines), from the image's working directory, beyond loopback with
	// a token, and the state volume keeps its history across restarts.
	if len(orch.Command) < 2 || orch.Command[0] != "serve" {
		t.Fatalf("orch command %q; want serve ... DIR", orch.Command)
	}
	dir := orch.Command[len(orch.Command)-1]
	abs, _ := filepath.Abs(root)
	files, _ := filepath.Glob(filepath.Join(root, dir, "*.yaml"))
	loaded := 0
	for _, f := range files {
		if p, err := pipeline.Load(f, pipeline.Options{Root: abs, Kinds: (&globals{}).registry()}); err == nil && p.Schedule != nil {
			loaded++
		}
	}
	if loaded == 0 {
		t.Errorf("no pipeline in %s loads with a schedule: serve would run nothing", dir)
	}
	cmd, rest, _ := newRoot().Find(orch.Command)
	if cmd == nil || cmd.Name() != "serve" {
		t.Fatalf("orch has no %q command", orch.Command[0])
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("orch serve flags %q: %v", rest, err)
	}
	if a := cmd.Flags().Lookup("addr").Value.String(); !strings.HasSuffix(a, ":8080") || !slices.Contains(orch.Ports, "127.0.0.1:8080:8080") {
		t.Errorf("serve --addr %s, ports %v: want :8080 published on the host's loopback", a, orch.Ports)
	}
	if !strings.Contains(orch.Environment["ORCH_TOKEN"], "${ORCH_TOKEN:?") {
		t.Errorf("ORCH_TOKEN %q: want it required from the environment", orch.Environment["ORCH_TOKEN"])
	}
	// docker stop sends SIGTERM, then SIGKILL after stop_grace_period:
	// serve's --grace must fit in it.
	if orch.Hostname == "" {
		t.Errorf("service orch has no fixed hostname: a recreated container would not recognise the runs its predecessor left running")
	}
	stop, _ := time.ParseDuration(orch.StopGrace)
	if g, _ := time.ParseDuration(cmd.Flags().Lookup("grace").Value.String()); stop <= g {
		t.Errorf("stop_grace_period %q is not longer than serve's --grace %s", orch.StopGrace, g)
	}
	if !slices.Contains(orch.Volumes, "orch-state:/work/.orch") {
		t.Errorf("orch volumes %v: the state directory is not a volume", orch.Volumes)
	}
}

// TestDockerComposeSpec loads docker-compose.yml with compose-go, as
// `docker compose` does: schema validation, interpolation, dependencies.
func TestDockerComposeSpec(t *testing.T) {
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	load := func(env []string) (*types.Project, error) {
		opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
			cli.WithWorkingDirectory(root), cli.WithName("orch"), cli.WithEnv(env))
		if err != nil {
			return nil, err
		}
		return opts.LoadProject(context.Background())
	}
	p, err := load([]string{"ORCH_TOKEN=t0ken"})
	if err != nil {
		t.Fatalf("compose-go: %v", err)
	}
	orch, err := p.GetService("orch")
	if err != nil {
		t.Fatal(err)
	}
	if tok := orch.Environment["ORCH_TOKEN"]; tok == nil || *tok != "t0ken" {
		t.Errorf("ORCH_TOKEN not taken from the environment: %v", tok)
	}
	if orch.Build == nil || orch.Build.Context != root {
		t.Errorf("orch build: %+v", orch.Build)
	}
	if d, ok := orch.DependsOn["createbucket"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("orch depends_on: %+v", orch.DependsOn)
	}
	if len(orch.Ports) != 1 || orch.Ports[0].HostIP != "127.0.0.1" || orch.Ports[0].Target != 8080 {
		t.Errorf("orch ports: %+v", orch.Ports)
	}
	if _, err := load(nil); err == nil || !strings.Contains(err.Error(), "set ORCH_TOKEN") {
		t.Errorf("without ORCH_TOKEN: %v; want an error that asks for it", err)
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
	var build, entry, workdir, user string
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
		case "USER":
			user = rest
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
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("USER %q: the image must run orch as a non-root user", user)
	}
}
