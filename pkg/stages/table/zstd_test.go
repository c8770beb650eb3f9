package table

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// pages returns page-sized inputs: random float32s (incompressible), a
// few distinct float32s (compressible) and bytes around the stored
// blocks' length boundaries.
func testPages() map[string][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 0, 1<<20)
	few := make([]byte, 0, 1<<20)
	for range 1 << 18 {
		random = binary.LittleEndian.AppendUint32(random, math.Float32bits(float32(rng.NormFloat64())))
		few = binary.LittleEndian.AppendUint32(few, math.Float32bits(float32(rng.IntN(10))*0.37))
	}
	p := map[string][]byte{"random": random, "few": few}
	for _, n := range []int{0, 1, 14, 15, 16, 269, 270, 271, 2*sampleBytes - 1, 2 * sampleBytes, 128 << 10, 128<<10 + 1, 256 << 10} {
		p["random"+string(rune('a'+len(p)))] = random[:n]
	}
	return p
}

// Every page either codec writes decodes, with arrow-go's decoders (as
// orch reads) and the reference libraries, to the page; incompressible
// pages are stored (about their own size), compressible ones compressed.
func TestCodecsStoreIncompressible(t *testing.T) {
	for _, name := range []compress.Compression{compress.Codecs.Zstd, compress.Codecs.Lz4Raw} {
		c, err := compress.GetCodec(name)
		if err != nil {
			t.Fatal(err)
		}
		for k, page := range testPages() {
			enc := c.Encode(nil, page)
			dec := c.Decode(make([]byte, len(page)), enc)
			if !bytes.Equal(dec, page) {
				t.Errorf("%v %s (%d bytes): round trip differs", name, k, len(page))
			}
			if name == compress.Codecs.Lz4Raw {
				ref := make([]byte, len(page))
				if n, err := lz4.UncompressBlock(enc, ref); err != nil || n != len(page) || !bytes.Equal(ref, page) {
					t.Errorf("lz4 %s: pierrec decodes %d bytes, %v", k, n, err)
				}
			}
			switch {
			case k == "few" && len(enc) > len(page)/2:
				t.Errorf("%v %s: %d of %d bytes, want compressed", name, k, len(enc), len(page))
			case k == "random" && len(enc) > len(page)+len(page)/200+16:
				t.Errorf("%v %s: %d of %d bytes, want stored", name, k, len(enc), len(page))
			}
		}
	}
}

// The stored forms, byte by byte: an LZ4 literal run's length in 255s and
// a last byte, a zstd frame header with the content size and raw blocks.
func TestStoredForms(t *testing.T) {
	src := bytes.Repeat([]byte{7}, 15+255+3)
	got := lz4Stored(nil, src)
	if want := []byte{0xF0, 255, 3}; !bytes.Equal(got[:3], want) || len(got) != 3+len(src) {
		t.Errorf("lz4Stored(%d bytes) starts % x, %d bytes", len(src), got[:3], len(got))
	}
	if got := lz4Stored(nil, []byte{1, 2}); !bytes.Equal(got, []byte{0x20, 1, 2}) {
		t.Errorf("lz4Stored(2 bytes) = % x", got)
	}
	src = make([]byte, 128<<10+5)
	got = zstdStored(nil, src)
	want := []byte{0x28, 0xB5, 0x2F, 0xFD, 0xA0, 5, 0, 2, 0, // magic, header, size 0x20005
		0x00, 0x00, 0x10} // raw block of 128 KiB, not last: 0x20000<<3
	if !bytes.Equal(got[:len(want)], want) {
		t.Errorf("zstdStored header % x, want % x", got[:len(want)], want)
	}
	if last := got[len(want)+128<<10:][:3]; !bytes.Equal(last, []byte{5<<3 | 1, 0, 0}) {
		t.Errorf("zstdStored last block header % x", last)
	}
}

// The codecs against arrow-go's own encoders (the "arrow" sub-benchmarks),
// on a page of random float32s and one of few distinct values.
func BenchmarkCodecs(b *testing.B) {
	pages := testPages()
	for _, name := range []compress.Compression{compress.Codecs.Zstd, compress.Codecs.Lz4Raw} {
		ours, _ := compress.GetCodec(name)
		var arrow compress.Codec
		switch c := ours.(type) {
		case *pageCodec[*zstd.Encoder]:
			arrow = c.Codec
		case *pageCodec[*lz4.Compressor]:
			arrow = c.Codec
		}
		for _, k := range []string{"random", "few"} {
			for _, impl := range []struct {
				n string
				c compress.Codec
			}{{"orch", ours}, {"arrow", arrow}} {
				b.Run(name.String()+"/"+k+"/"+impl.n, func(b *testing.B) {
					page := pages[k]
					dst := make([]byte, 0, impl.c.CompressBound(int64(len(page))))
					b.SetBytes(int64(len(page)))
					for b.Loop() {
						impl.c.EncodeLevel(dst, page, 1)
					}
				})
			}
		}
	}
}
