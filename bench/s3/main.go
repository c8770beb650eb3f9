// Command s3bench times orch's S3 store against awscli on one S3 server, in
// one sitting: a 1 GiB blob and 10,000 small files, up and down, and a
// no-change `orch push` over the 10,000 blobs. bench/s3/run.sh starts a
// local versitygw and runs it; the AWS_* variables say where the server is.
//
// orch's side is what the commands run: uploads are `orch push` of a local
// cache holding the blobs (the CLI binary, -orch); downloads are the
// parallel, verified fetch of `orch pull` (store.Tiered.Fetch) into an empty
// local cache. awscli's side is `aws s3 cp` (--recursive for the small
// files) with --endpoint-url. Every repetition writes under a fresh prefix
// and reads into a fresh directory; the best of -runs is reported.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
)

func main() {
	var (
		bucket   = flag.String("bucket", "orch-test", "bucket on the server")
		bigSize  = flag.Int64("big", 1<<30, "size of the large blob in bytes")
		nSmall   = flag.Int("small", 10000, "number of small files")
		smallMax = flag.Int("small-max", 8192, "small files are 1 to this many bytes (uniform)")
		runs     = flag.Int("runs", 2, "repetitions of each transfer (best is reported)")
		orchBin  = flag.String("orch", "bin/orch", "the orch binary")
		awsBin   = flag.String("aws", "aws", "the awscli binary")
		work     = flag.String("work", "", "scratch directory (default: a temp dir, removed)")
		only     = flag.String("only", "", "run only scenarios whose name contains this")
	)
	flag.Parse()
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		fail("AWS_ENDPOINT_URL is not set (run bench/s3/run.sh, or eval scripts/s3server.sh start)")
	}
	dir := *work
	if dir == "" {
		d, err := os.MkdirTemp("", "s3bench-")
		check(err)
		defer os.RemoveAll(d)
		dir = d
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := "s3bench-" + hex.EncodeToString(b[:])
	ctx := context.Background()
	b0 := &bench{ctx: ctx, dir: dir, bucket: *bucket, base: base, endpoint: endpoint, orch: *orchBin, aws: *awsBin, runs: *runs}

	fmt.Fprintf(os.Stderr, "s3bench: data in %s, objects under s3://%s/%s, server %s\n", dir, *bucket, base, endpoint)
	fmt.Fprintf(os.Stderr, "s3bench: %s\n", version(*awsBin, "--version"))

	type row struct {
		name        string
		bytes       int64
		files       int
		orch, awscl time.Duration
	}
	var rows []row
	want := func(name string) bool { return *only == "" || strings.Contains(name, *only) }

	if want("1 GiB") {
		big := b0.makeBig(*bigSize)
		up := b0.best(func(i int) time.Duration { return b0.orchPush(big, fmt.Sprintf("big-orch-%d", i)) })
		upAWS := b0.best(func(i int) time.Duration {
			return b0.awsRun("", "s3", "cp", big.files[0], fmt.Sprintf("s3://%s/%s/big-aws-%d/blob", b0.bucket, base, i))
		})
		down := b0.best(func(i int) time.Duration { return b0.orchFetch(big, "big-orch-0", i) })
		downAWS := b0.best(func(i int) time.Duration {
			dst := filepath.Join(dir, fmt.Sprintf("aws-big-down-%d", i))
			return b0.awsRun(dst, "s3", "cp", fmt.Sprintf("s3://%s/%s/big-aws-0/blob", b0.bucket, base), dst)
		})
		name := fmt.Sprintf("%s blob", size(*bigSize))
		rows = append(rows, row{name + ", upload", big.bytes, 1, up, upAWS}, row{name + ", download", big.bytes, 1, down, downAWS})
	}
	if want("small") {
		small := b0.makeSmall(*nSmall, *smallMax)
		up := b0.best(func(i int) time.Duration { return b0.orchPush(small, fmt.Sprintf("small-orch-%d", i)) })
		upAWS := b0.best(func(i int) time.Duration {
			return b0.awsRun("", "s3", "cp", "--recursive", small.dir, fmt.Sprintf("s3://%s/%s/small-aws-%d/", b0.bucket, base, i))
		})
		down := b0.best(func(i int) time.Duration { return b0.orchFetch(small, "small-orch-0", i) })
		downAWS := b0.best(func(i int) time.Duration {
			dst := filepath.Join(dir, fmt.Sprintf("aws-small-down-%d", i))
			return b0.awsRun(dst, "s3", "cp", "--recursive", fmt.Sprintf("s3://%s/%s/small-aws-0/", b0.bucket, base), dst)
		})
		name := fmt.Sprintf("%d small files (%s)", *nSmall, size(small.bytes))
		rows = append(rows, row{name + ", upload", small.bytes, *nSmall, up, upAWS}, row{name + ", download", small.bytes, *nSmall, down, downAWS})

		// No-change push: everything is on the remote already.
		noop := b0.best(func(int) time.Duration { return b0.orchPush(small, "small-orch-0") })
		fmt.Printf("\nno-change `orch push` of a cache of %d blobs (all on the remote): %.2fs (best of %d)\n", *nSmall, noop.Seconds(), *runs)
	}

	fmt.Println()
	fmt.Println("| transfer | orch | awscli | awscli time / orch time |")
	fmt.Println("|---|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %.2fs (%s) | %.2fs (%s) | %.2f× |\n", r.name,
			r.orch.Seconds(), rate(r.bytes, r.files, r.orch), r.awscl.Seconds(), rate(r.bytes, r.files, r.awscl), r.awscl.Seconds()/r.orch.Seconds())
	}
}

type bench struct {
	ctx      context.Context
	dir      string
	bucket   string
	base     string
	endpoint string
	orch     string
	aws      string
	runs     int
}

// dataset is files on disk (for awscli) and a local orch cache holding
// the same bytes as blobs (for orch push).
type dataset struct {
	dir    string // the files
	files  []string
	cache  string // a local orch store with them
	blobs  []digest.Digest
	bytes  int64
	nFiles int
}

func (b *bench) makeBig(n int64) *dataset {
	ds := &dataset{dir: filepath.Join(b.dir, "big"), cache: filepath.Join(b.dir, "big-cache"), nFiles: 1}
	check(os.MkdirAll(ds.dir, 0o755))
	path := filepath.Join(ds.dir, "blob")
	f, err := os.Create(path)
	check(err)
	r := mrand.NewChaCha8(seed())
	_, err = io.CopyN(f, r, n)
	check(err)
	check(f.Close())
	ds.files, ds.bytes = []string{path}, n
	b.fill(ds)
	return ds
}

func (b *bench) makeSmall(n, maxSize int) *dataset {
	ds := &dataset{dir: filepath.Join(b.dir, "small"), cache: filepath.Join(b.dir, "small-cache"), nFiles: n}
	r := mrand.New(mrand.NewChaCha8(seed()))
	for i := range n {
		sub := filepath.Join(ds.dir, fmt.Sprintf("d%02d", i%100))
		check(os.MkdirAll(sub, 0o755))
		buf := make([]byte, 1+r.IntN(maxSize))
		for j := range buf {
			buf[j] = byte(r.Uint32())
		}
		p := filepath.Join(sub, fmt.Sprintf("f%05d.bin", i))
		check(os.WriteFile(p, buf, 0o644))
		ds.files = append(ds.files, p)
		ds.bytes += int64(len(buf))
	}
	b.fill(ds)
	return ds
}

// fill puts every file of ds into a local orch store at ds.cache.
func (b *bench) fill(ds *dataset) {
	l, err := store.OpenLocal(ds.cache)
	check(err)
	for _, p := range ds.files {
		f, err := os.Open(p)
		check(err)
		h := digest.NewHasher()
		_, err = io.Copy(h, f)
		check(err)
		d := h.Sum()
		_, err = f.Seek(0, 0)
		check(err)
		check(l.PutBlob(b.ctx, d, f))
		f.Close()
		ds.blobs = append(ds.blobs, d)
	}
}

func seed() [32]byte {
	var s [32]byte
	_, _ = rand.Read(s[:])
	return s
}

func (b *bench) remote(prefix string) string {
	return fmt.Sprintf("s3://%s/%s/%s?endpoint=%s", b.bucket, b.base, prefix, b.endpoint)
}

// orchPush times `orch push` of ds's cache to prefix.
func (b *bench) orchPush(ds *dataset, prefix string) time.Duration {
	cmd := exec.Command(b.orch, "push", "--cache-dir", ds.cache, "--remote", b.remote(prefix), "-w", b.dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		fail(fmt.Sprintf("orch push: %v\n%s", err, out.String()))
	}
	d := time.Since(start)
	fmt.Fprintf(os.Stderr, "  orch push %s: %.2fs: %s", prefix, d.Seconds(), out.String())
	return d
}

// orchFetch times the verified parallel download of every blob of ds from
// prefix into a fresh local cache, as `orch pull` does it.
func (b *bench) orchFetch(ds *dataset, prefix string, i int) time.Duration {
	r, err := store.ParseRemote(b.remote(prefix))
	check(err)
	local, err := store.OpenLocal(filepath.Join(b.dir, fmt.Sprintf("fetch-%s-%d", prefix, i)))
	check(err)
	t, err := r.Tiered(b.ctx, local, func(err error) { fail("remote: " + err.Error()) })
	check(err)
	start := time.Now()
	st, err := t.Fetch(b.ctx, ds.blobs, 16)
	d := time.Since(start)
	check(err)
	if st.Fetched != len(uniq(ds.blobs)) {
		fail(fmt.Sprintf("fetched %d of %d blobs", st.Fetched, len(uniq(ds.blobs))))
	}
	fmt.Fprintf(os.Stderr, "  orch fetch %s: %.2fs: %d blobs, %s\n", prefix, d.Seconds(), st.Fetched, size(st.Bytes))
	check(os.RemoveAll(local.Root()))
	return d
}

func uniq(ds []digest.Digest) map[digest.Digest]bool {
	m := map[digest.Digest]bool{}
	for _, d := range ds {
		m[d] = true
	}
	return m
}

// awsRun times one aws command; a download directory or file given as
// cleanup is removed afterwards.
func (b *bench) awsRun(cleanup string, args ...string) time.Duration {
	args = append(args, "--endpoint-url", b.endpoint, "--only-show-errors")
	cmd := exec.Command(b.aws, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		fail(fmt.Sprintf("aws %s: %v\n%s", strings.Join(args, " "), err, out.String()))
	}
	d := time.Since(start)
	fmt.Fprintf(os.Stderr, "  aws %s: %.2fs\n", strings.Join(args[:len(args)-3], " "), d.Seconds())
	if cleanup != "" {
		check(os.RemoveAll(cleanup))
	}
	return d
}

func (b *bench) best(f func(i int) time.Duration) time.Duration {
	var best time.Duration
	for i := range b.runs {
		if d := f(i); i == 0 || d < best {
			best = d
		}
	}
	return best
}

func rate(n int64, files int, d time.Duration) string {
	if files > 1 {
		return fmt.Sprintf("%.0f files/s", float64(files)/d.Seconds())
	}
	return fmt.Sprintf("%.0f MiB/s", float64(n)/(1<<20)/d.Seconds())
}

func size(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

func version(bin string, arg string) string {
	out, err := exec.Command(bin, arg).CombinedOutput()
	if err != nil {
		return bin + " (version unknown)"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "s3bench:", msg)
	os.Exit(1)
}
