package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/orch-dev/orch/pkg/store"
)

// TestRemoteScripts runs the end-to-end scripts of the shared S3 cache in
// testdata/remote against the real S3 server of scripts/s3server.sh
// (ORCH_TEST_S3 and the AWS_* variables it exports). Each script gets
// $REMOTE, a fresh prefix of ORCH_TEST_S3.
//
// Extra script commands, besides code and waitfile:
//
//	s3server start|stop   a private versitygw (ORCH_TEST_VERSITYGW) on a
//	                      port fixed for the script, objects in
//	                      $WORK/s3data, pid in $WORK/vgw.pid; start sets
//	                      $VGW to s3://orch-test/e2e?max_attempts=2&endpoint=… on it
func TestRemoteScripts(t *testing.T) {
	base := os.Getenv("ORCH_TEST_S3")
	if base == "" {
		msg := "ORCH_TEST_S3 is not set: SKIPPING the end-to-end tests against a real S3 server. " +
			`Run them with: eval "$(scripts/s3server.sh start /tmp/orch-s3)"`
		fmt.Fprintln(os.Stderr, "!!!", msg)
		t.Skip(msg)
	}
	path, query, _ := strings.Cut(base, "?")
	if query != "" {
		query = "?" + query
	}
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("testdata", "remote"),
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"code":     cmdCode,
			"waitfile": cmdWaitfile,
			"s3server": cmdS3server,
			"api":      cmdAPI,
			"waitapi":  cmdWaitAPI,
		},
		Setup: func(env *testscript.Env) error {
			env.Setenv("ORCH_CACHE_DIR", "")
			env.Setenv("ORCH_REMOTE", "")
			for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
				"AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"} {
				if v, ok := os.LookupEnv(k); ok {
					env.Setenv(k, v)
				}
			}
			var b [6]byte
			_, _ = rand.Read(b[:])
			env.Setenv("REMOTE", strings.TrimSuffix(path, "/")+"/e2e-"+hex.EncodeToString(b[:])+query)
			return nil
		},
	})
}

// cmdS3server starts or stops the script's private S3 server.
func cmdS3server(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: s3server start|stop")
	}
	work := ts.Getenv("WORK")
	pidFile := filepath.Join(work, "vgw.pid")
	switch args[0] {
	case "stop":
		b, err := os.ReadFile(pidFile)
		ts.Check(err)
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		ts.Check(err)
		p, err := os.FindProcess(pid)
		ts.Check(err)
		_ = p.Kill()
		return
	case "start":
	default:
		ts.Fatalf("usage: s3server start|stop")
	}
	bin := os.Getenv("ORCH_TEST_VERSITYGW")
	if bin == "" {
		ts.Fatalf("ORCH_TEST_VERSITYGW (the versitygw binary, exported by scripts/s3server.sh) is not set")
	}
	port := ts.Getenv("VGW_PORT")
	if port == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		ts.Check(err)
		port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		ts.Setenv("VGW_PORT", port)
	}
	data := filepath.Join(work, "s3data")
	ts.Check(os.MkdirAll(data, 0o755))
	logf, err := os.OpenFile(filepath.Join(work, "vgw.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	ts.Check(err)
	defer logf.Close()
	cmd := exec.Command(bin, "--quiet", "--port", "127.0.0.1:"+port, "--health", "/health", "posix", data)
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY="+os.Getenv("AWS_ACCESS_KEY_ID"),
		"ROOT_SECRET_KEY="+os.Getenv("AWS_SECRET_ACCESS_KEY"))
	cmd.Stdout, cmd.Stderr = logf, logf
	ts.Check(cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	ts.Defer(func() { _ = cmd.Process.Kill(); <-exited })
	ts.Check(os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644))

	endpoint := "http://127.0.0.1:" + port
	deadline := time.Now().Add(waitLimit)
	for {
		resp, err := http.Get(endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			ts.Fatalf("versitygw exited at start (see vgw.log)")
		default:
		}
		if time.Now().After(deadline) {
			ts.Fatalf("versitygw not ready on %s within %s", endpoint, waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err := store.OpenS3(context.Background(), store.S3Config{Bucket: "orch-test", Endpoint: endpoint})
	ts.Check(err)
	_, err = s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("orch-test")})
	if err != nil && !strings.Contains(err.Error(), "BucketAlreadyOwnedByYou") {
		ts.Fatalf("create bucket: %v", err)
	}
	ts.Setenv("VGW", "s3://orch-test/e2e?max_attempts=2&endpoint="+endpoint)
}
