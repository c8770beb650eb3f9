package table

import (
	"encoding/binary"
	"math"
	"sync"

	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// The page codecs of the files this process writes. Both first compress a
// sample of the page (its first sampleBytes) and, when that saves less
// than a sixteenth, store the page as it is, in the codec's own format (a
// zstd frame of raw blocks, an LZ4 block of literals), for about the cost
// of a copy: bit-packed integers, random floats and dictionary indices
// barely compress. The choice depends on the page's bytes only, so the
// file is the same run to run. Any decoder of the codec reads either form.

// sampleBytes is how much of a page the codecs try before compressing it
// whole; pages shorter than twice that are compressed without a trial.
const sampleBytes = 16 << 10

// sampled compresses src with enc, unless compressing its first
// sampleBytes saves less than a sixteenth: then it stores src with store.
// Pages shorter than twice the sample, or longer than most, are
// compressed without a trial. dst is the memory to use.
func sampled(dst, src []byte, most int, enc, store func(dst, src []byte) []byte) []byte {
	if len(src) >= 2*sampleBytes && len(src) <= most {
		trial := enc(dst[:0], src[:sampleBytes])
		if len(trial) > sampleBytes-sampleBytes/16 {
			return store(trial[:0], src)
		}
		dst = trial // reuse its memory
	}
	return enc(dst[:0], src)
}

// pageCodec is a page encoder in place of one of arrow-go's: enc
// compresses with a pooled E, store stores (see sampled), pages up to
// most bytes long.
type pageCodec[E any] struct {
	compress.Codec // arrow-go's: decoding and bounds
	pool           sync.Pool
	most           int
	enc            func(e E, dst, src []byte) []byte
	store          func(dst, src []byte) []byte
}

func (c *pageCodec[E]) Encode(dst, src []byte) []byte { return c.EncodeLevel(dst, src, 0) }

// EncodeLevel encodes src: the codecs have one level each.
func (c *pageCodec[E]) EncodeLevel(dst, src []byte, _ int) []byte {
	e := c.pool.Get().(E)
	defer c.pool.Put(e)
	return sampled(dst, src, c.most, func(dst, src []byte) []byte { return c.enc(e, dst, src) }, c.store)
}

// The ZSTD page encoder replaces arrow-go's (only ingest's tables use
// zstd): klauspost's fastest level, as arrow-go's level 1, but without
// Huffman coding of the literals, which arrow-go forces on
// (WithAllLitEntropyCompression). At 3M rows ingest spends 0.25 s less CPU
// (3 alternating runs: 3.16–3.25 → 2.98–3.07 s, ingest's wall 1.6 → 1.5 s)
// for a 6% larger table (58.5 → 62.0 MB). Decoding is arrow-go's. The
// codecs are registered in init.

// maxStoredZstd bounds the pages zstdStored writes: its frame declares the
// page's size as the decoder's window (single segment), and decoders limit
// windows (libzstd by default to 128 MiB). Data pages are about 1 MiB.
const maxStoredZstd = 8 << 20

// zstdStored appends to dst a zstd frame holding src in raw (stored)
// blocks (RFC 8878 section 3.1.1): a single-segment frame header with the
// 4-byte content size, then blocks of at most 128 KiB, each a 3-byte
// header (last-block bit, type 0 = raw, size) and the bytes.
func zstdStored(dst, src []byte) []byte {
	const maxBlock = 128 << 10
	dst = binary.LittleEndian.AppendUint32(dst, 0xFD2FB528)
	dst = append(dst, 0b10_1_00_0_00) // content size in 4 bytes, single segment, no checksum, no dictionary
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(src)))
	for {
		n := min(len(src), maxBlock)
		hdr := uint32(n) << 3 // type 0: raw
		if n == len(src) {
			hdr |= 1 // last block
		}
		dst = append(dst, byte(hdr), byte(hdr>>8), byte(hdr>>16))
		dst = append(dst, src[:n]...)
		src = src[n:]
		if len(src) == 0 {
			return dst
		}
	}
}

// lz4Stored appends to dst an LZ4 block holding src as one run of
// literals: a token with the literal length (15 meaning "more follows")
// and no match, the rest of the length in bytes of 255 and a last byte
// below 255, then the bytes. A block ending in a sequence of literals only
// is what the format requires.
func lz4Stored(dst, src []byte) []byte {
	n := len(src)
	if n < 15 {
		return append(append(dst, byte(n<<4)), src...)
	}
	dst = append(dst, 0xF0)
	for n -= 15; n >= 255; n -= 255 {
		dst = append(dst, 255)
	}
	dst = append(dst, byte(n))
	return append(dst, src...)
}

func init() {
	orig, err := compress.GetCodec(compress.Codecs.Zstd)
	if err != nil {
		panic(err)
	}
	zc := &pageCodec[*zstd.Encoder]{Codec: orig, most: maxStoredZstd, store: zstdStored,
		enc: func(e *zstd.Encoder, dst, src []byte) []byte { return e.EncodeAll(src, dst) }}
	zc.pool.New = func() any {
		enc, err := zstd.NewWriter(nil, zstd.WithZeroFrames(true), zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(1), zstd.WithNoEntropyCompression(true))
		if err != nil {
			panic(err)
		}
		return enc
	}
	compress.RegisterCodec(compress.Codecs.Zstd, zc)

	// LZ4_RAW: pierrec's block compressor, as arrow-go's.
	orig, err = compress.GetCodec(compress.Codecs.Lz4Raw)
	if err != nil {
		panic(err)
	}
	lc := &pageCodec[*lz4.Compressor]{Codec: orig, most: math.MaxInt, store: lz4Stored, enc: lz4Encode}
	lc.pool.New = func() any { return new(lz4.Compressor) }
	compress.RegisterCodec(compress.Codecs.Lz4Raw, lc)
}

// lz4Encode appends src as an LZ4 block to dst.
func lz4Encode(comp *lz4.Compressor, dst, src []byte) []byte {
	if bound := lz4.CompressBlockBound(len(src)); cap(dst) < bound {
		dst = make([]byte, 0, bound)
	}
	n, err := comp.CompressBlock(src, dst[:cap(dst)])
	if err != nil {
		panic(err) // dst holds CompressBlockBound: cannot happen
	}
	if n == 0 { // pierrec's "incompressible": stored
		return lz4Stored(dst[:0], src)
	}
	return dst[:n]
}
