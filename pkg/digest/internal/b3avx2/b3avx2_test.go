package b3avx2

import (
	"math/rand/v2"
	"testing"

	"lukechampine.com/blake3/guts"
)

func TestHashF(t *testing.T) {
	if !Available {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(1, 1))
	var in [8192]byte
	for range 50 {
		for i := range in {
			in[i] = byte(rng.Uint32())
		}
		counter := rng.Uint64() >> rng.IntN(64)
		var key [8]uint32
		for i := range key {
			key[i] = rng.Uint32()
		}
		var out [64]uint32
		var chain [8]uint32
		HashF(&in, 8192, counter, 0, &key, &out, &chain)
		for i := range 8 {
			want := guts.ChainingValue(guts.CompressChunk(in[1024*i:1024*(i+1)], &key, counter+uint64(i), 0))
			for w := range 8 {
				if out[8*w+i] != want[w] {
					t.Fatalf("counter %d: chunk %d word %d = %#x, want %#x", counter, i, w, out[8*w+i], want[w])
				}
			}
		}
	}
}

func TestHashP(t *testing.T) {
	if !Available {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(2, 2))
	for range 50 {
		var l, r, out [64]uint32
		for i := range l {
			l[i], r[i] = rng.Uint32(), rng.Uint32()
		}
		HashP(&l, &r, guts.FlagParent, &guts.IV, &out, 8)
		for i := range 8 {
			var a, b [8]uint32
			for w := range 8 {
				a[w], b[w] = l[8*w+i], r[8*w+i]
			}
			want := guts.ChainingValue(guts.ParentNode(a, b, &guts.IV, 0))
			for w := range 8 {
				if out[8*w+i] != want[w] {
					t.Fatalf("parent %d word %d = %#x, want %#x", i, w, out[8*w+i], want[w])
				}
			}
		}
	}
}
