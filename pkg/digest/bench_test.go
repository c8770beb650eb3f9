package digest

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// benchFile makes BenchmarkFile hash that file instead of its own ones, so
// that it can be timed against b3sum on the very same file (docs/hashing.md):
//
//	go test -run XXX -bench BenchmarkFile ./pkg/digest/ -args -benchfile=FILE
var benchFile = flag.String("benchfile", "", "file for BenchmarkFile to hash instead of generated ones")

// writeRandomFile writes n pseudo-random bytes to path without holding them
// all in memory.
func writeRandomFile(b *testing.B, path string, n int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{1}), n); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFile times File on 1 MiB, 64 MiB and 512 MiB files (or on
// -benchfile): "serial" is the single-threaded zeebo/blake3 read loop that File
// used before it went parallel, "parallel" is File itself (memory-mapped, all
// cores), "stream" is Reader on the open file (read in batches, all cores).
// The files are written just before, so they are in the page cache.
func BenchmarkFile(b *testing.B) {
	type input struct {
		name string
		path string
		size int64
	}
	var inputs []input
	if *benchFile != "" {
		fi, err := os.Stat(*benchFile)
		if err != nil {
			b.Fatal(err)
		}
		inputs = append(inputs, input{"file", *benchFile, fi.Size()})
	} else {
		dir := b.TempDir()
		for _, n := range []int64{1 << 20, 64 << 20, 512 << 20} {
			name := fmt.Sprintf("%dMiB", n>>20)
			p := filepath.Join(dir, name)
			writeRandomFile(b, p, n)
			inputs = append(inputs, input{name, p, n})
		}
	}
	for _, in := range inputs {
		b.Run(in.name+"/serial", func(b *testing.B) {
			b.SetBytes(in.size)
			for b.Loop() {
				f, err := os.Open(in.path)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := serialReader(f); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
		b.Run(in.name+"/parallel", func(b *testing.B) {
			b.SetBytes(in.size)
			var d Digest
			for b.Loop() {
				var err error
				if d, _, err = File(in.path); err != nil {
					b.Fatal(err)
				}
			}
			if *benchFile != "" {
				b.Logf("%s  %s", d, in.path) // as b3sum prints it
			}
		})
		b.Run(in.name+"/stream", func(b *testing.B) {
			b.SetBytes(in.size)
			for b.Loop() {
				f, err := os.Open(in.path)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := Reader(f); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
}

// BenchmarkKernel times one core hashing 64 MiB in memory with each kernel
// set, and all cores with the default one.
func BenchmarkKernel(b *testing.B) {
	in := randomInput(64 << 20)
	run := func(name string, avx2 bool, w int) {
		b.Run(name, func(b *testing.B) {
			saved := useAVX2
			defer func() { useAVX2 = saved }()
			useAVX2 = avx2
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if _, err := hashTree(in, maxUnit, w, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	if useAVX2 {
		run("avx2/1core", true, 1)
	}
	run("guts/1core", false, 1)
	b.Run("zeebo-serial/1core", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			reference(in)
		}
	})
	run("default/allcores", useAVX2, workers())
}
