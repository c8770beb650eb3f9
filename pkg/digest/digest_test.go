package digest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orch-dev/orch/pkg/digest/internal/b3avx2"
	"github.com/zeebo/blake3"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// vectorInput is the input of the official BLAKE3 test vectors: byte i is
// i mod 251.
func vectorInput(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// randomInput returns n pseudo-random bytes, the same for the same n.
func randomInput(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)})
	_, _ = r.Read(b)
	return b
}

// reference is the serial hash the parallel paths must equal.
func reference(b []byte) Digest { return Digest(blake3.Sum256(b)) }

// kernels runs f once per available kernel set.
func kernels(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	saved := useAVX2
	t.Cleanup(func() { useAVX2 = saved })
	if b3avx2.Available {
		useAVX2 = true
		t.Run("avx2", f)
	}
	useAVX2 = false
	t.Run("guts", f)
	useAVX2 = saved
}

// writeTemp writes b to a new file and returns its path.
func writeTemp(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "content")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// choppyReader returns b in reads of pseudo-random lengths, some of them
// zero, to exercise Reader's batching.
type choppyReader struct {
	b   []byte
	rng *rand.Rand
}

func (r *choppyReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.b), r.rng.IntN(300*kib))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// BLAKE3 test vectors: the first 32 bytes of "hash" for the inputs of the
// official test_vectors.json, as lukechampine.com/blake3/testdata ships it
// (whose last case is 100000 bytes, the official one's 102400); every value
// was checked again with Debian's b3sum 1.2.0.
var officialVectors = []struct {
	n    int
	want string
}{
	{0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
	{1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
	{1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
	{1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
	{1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
	{2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
	{2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
	{3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
	{3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"},
	{4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"},
	{4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"},
	{5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"},
	{5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"},
	{6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"},
	{6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"},
	{7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"},
	{7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"},
	{8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"},
	{8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"},
	{16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"},
	{31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"},
	{100000, "d93c23eedaf165a7e0be908ba86f1a7a520d568d2d13cde787c8580c5c72cc54"},
	{102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
}

// Hashes that b3sum 1.2.0 (Debian 12) printed for vectorInput(n): they check
// the parallel paths at sizes that have many units against an independent
// implementation.
var b3sumVectors = []struct {
	n    int
	want string
}{
	{3*mib + 1, "fd984eaa20053d346cc7c79a175338f91556e68b871d877b23568a4587d9875b"},
	{8 * mib, "1adedad9735f565ac6e22dab203db63b960c27098f2c0f0fda9adf9238d4c0c9"},
	{40*mib + 12345, "36d5fb8346028611a182386cafca089f3d40152312b389988d0b44a87bcedcb3"},
}

func TestOfficialVectors(t *testing.T) {
	kernels(t, func(t *testing.T) {
		for _, v := range officialVectors {
			in := vectorInput(v.n)
			if got := Bytes(in).String(); got != v.want {
				t.Errorf("Bytes(%d bytes) = %s, want %s", v.n, got, v.want)
			}
			if got, n, err := Reader(bytes.NewReader(in)); err != nil || got.String() != v.want || n != int64(v.n) {
				t.Errorf("Reader(%d bytes) = %s, %d, %v; want %s", v.n, got, n, err, v.want)
			}
			// The tree code with tiny units, so that small vectors have
			// many of them.
			for _, unit := range []int{1 * kib, 2 * kib, 8 * kib, 16 * kib} {
				if v.n <= unit {
					continue
				}
				got, err := hashTree(in, unit, 3, false)
				if err != nil || got.String() != v.want {
					t.Errorf("hashTree(%d bytes, unit %d) = %s, %v; want %s", v.n, unit, got, err, v.want)
				}
			}
		}
	})
}

func TestB3sumVectors(t *testing.T) {
	for _, v := range b3sumVectors {
		in := vectorInput(v.n)
		if got := Bytes(in).String(); got != v.want {
			t.Errorf("Bytes(%d bytes) = %s, want %s", v.n, got, v.want)
		}
		got, n, err := File(writeTemp(t, in))
		if err != nil || got.String() != v.want || n != int64(v.n) {
			t.Errorf("File(%d bytes) = %s, %d, %v; want %s", v.n, got, n, err, v.want)
		}
	}
}

// sizes are the content sizes at which every path must equal the reference.
func sizes() []int {
	s := []int{
		0, 1, 63, 64, 65, 1023, 1024, 1025, 8*kib - 1, 8 * kib, 8*kib + 1,
		ParallelThreshold - 1, ParallelThreshold, ParallelThreshold + 1,
		ParallelThreshold + 1024, ParallelThreshold + 1023, ParallelThreshold + 8*kib,
		ParallelThreshold + minUnit, ParallelThreshold + minUnit - 1,
	}
	// Around powers of two of units, and streamUnit batches.
	for _, n := range []int{2 * mib, 3 * mib, 4 * mib, 5 * mib, 8 * mib, 16 * mib, 17 * mib} {
		s = append(s, n-1024, n-1, n, n+1, n+1024, n+streamUnit, n+streamUnit-1)
	}
	// A few random large sizes up to 40 MiB.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 4 {
		s = append(s, ParallelThreshold+rng.IntN(39*mib))
	}
	return append(s, 40*mib)
}

func TestParallelEqualsSerial(t *testing.T) {
	for _, n := range sizes() {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			in := randomInput(n)
			want := reference(in)
			if got := Bytes(in); got != want {
				t.Errorf("Bytes = %s, want %s", got, want)
			}
			if got := String(string(in)); got != want {
				t.Errorf("String = %s, want %s", got, want)
			}
			got, m, err := Reader(&choppyReader{b: in, rng: rand.New(rand.NewPCG(uint64(n), 3))})
			if err != nil || got != want || m != int64(n) {
				t.Errorf("Reader = %s, %d, %v; want %s, %d", got, m, err, want, n)
			}
			path := writeTemp(t, in)
			got, m, err = File(path)
			if err != nil || got != want || m != int64(n) {
				t.Errorf("File = %s, %d, %v; want %s, %d", got, m, err, want, n)
			}
			if n > 0 {
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if got, err := readFile(f, int64(n)); err != nil || got != want {
					t.Errorf("readFile = %s, %v; want %s", got, err, want)
				}
			}
			h := NewHasher()
			h.Write(in)
			if got := h.Sum(); got != want {
				t.Errorf("Hasher = %s, want %s", got, want)
			}
		})
	}
}

// TestTreeShapes checks hashTree with every kernel, several units and worker
// counts, on sizes that are and are not multiples of chunks and of units.
func TestTreeShapes(t *testing.T) {
	kernels(t, func(t *testing.T) {
		for _, n := range []int{
			1025, 2047, 2048, 2049, 3 * kib, 7*kib + 5, 16*kib + 1, 24 * kib,
			64*kib + 1, 96 * kib, 100*kib + 7, 128*kib - 1, 129 * kib, 1*mib + 3*kib + 9,
			5*mib - 1, 5 * mib,
		} {
			in := randomInput(n)
			want := reference(in)
			for _, unit := range []int{kib, 4 * kib, 8 * kib, 16 * kib, 64 * kib, 1 * mib} {
				if n <= unit {
					continue
				}
				for _, w := range []int{1, 2, 5} {
					got, err := hashTree(in, unit, w, false)
					if err != nil || got != want {
						t.Errorf("hashTree(%d bytes, unit %d, %d workers) = %s, %v; want %s", n, unit, w, got, err, want)
					}
				}
			}
		}
	})
}

func TestUnitFor(t *testing.T) {
	for _, c := range []struct {
		size int64
		w    int
		want int
	}{
		{ParallelThreshold, 1, 128 * kib},
		{ParallelThreshold, 2, minUnit},
		{ParallelThreshold, 64, minUnit},
		{64 * mib, 2, maxUnit},
		{16 * mib, 2, maxUnit},
		{15 * mib, 2, 512 * kib},
		{10 << 30, 64, maxUnit},
	} {
		u := unitFor(c.size, c.w)
		if u != c.want {
			t.Errorf("unitFor(%d, %d) = %d, want %d", c.size, c.w, u, c.want)
		}
		if u&(u-1) != 0 || u%chunkLen != 0 || int64(u) >= c.size {
			t.Errorf("unitFor(%d, %d) = %d: not a power-of-two number of chunks below size", c.size, c.w, u)
		}
	}
	for _, w := range []int{1, 2, 3, 8, 64, 1000} {
		b := streamBatch(w)
		if b%streamUnit != 0 || b < ParallelThreshold {
			t.Errorf("streamBatch(%d) = %d", w, b)
		}
	}
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestReaderError(t *testing.T) {
	boom := errors.New("boom")
	for _, n := range []int{0, 100, ParallelThreshold, 6 * mib, 20*mib + 3} {
		_, m, err := Reader(&failingReader{r: bytes.NewReader(randomInput(n)), err: boom})
		if !errors.Is(err, boom) {
			t.Errorf("Reader(%d bytes then error) err = %v, want boom", n, err)
		}
		if m > int64(n) {
			t.Errorf("Reader(%d bytes then error) n = %d", n, m)
		}
	}
}

// TestMappedFault checks that a mapped file that shrinks under the hash gives
// an error, not a crash.
func TestMappedFault(t *testing.T) {
	path := writeTemp(t, randomInput(4*mib))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, unmap, err := mapFile(f, 4*mib)
	if err != nil {
		t.Skip("cannot map files here:", err)
	}
	defer unmap()
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := hashTree(b, 64*kib, 2, true); err == nil {
		t.Fatal("hashTree of a truncated mapping succeeded")
	}
}

func TestFileErrors(t *testing.T) {
	if _, _, err := File(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("File(missing) err = %v", err)
	}
	// The read fallback notices a file shorter than its size said.
	f, err := os.Open(writeTemp(t, randomInput(2*mib)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := readFile(f, 3*mib); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("readFile(2 MiB file, 3 MiB) err = %v, want ErrUnexpectedEOF", err)
	}
}

func TestParseRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 1024, ParallelThreshold + 1} {
		d := Bytes(randomInput(n))
		s := d.String()
		if len(s) != 2*Size || strings.ToLower(s) != s {
			t.Fatalf("String() = %q", s)
		}
		p, err := Parse(s)
		if err != nil || p != d {
			t.Fatalf("Parse(%q) = %v, %v; want %v", s, p, err, d)
		}
		if d.Short() != s[:12] {
			t.Errorf("Short() = %q", d.Short())
		}
		txt, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var u Digest
		if err := u.UnmarshalText(txt); err != nil || u != d {
			t.Errorf("UnmarshalText(%q) = %v, %v", txt, u, err)
		}
		if d.IsZero() {
			t.Errorf("%v.IsZero()", d)
		}
	}
	if !Zero.IsZero() {
		t.Error("Zero.IsZero() = false")
	}
}

func TestParseErrors(t *testing.T) {
	good := Bytes(nil).String()
	for _, s := range []string{
		"",
		good[:63],
		good + "0",
		good[:62] + "zz",
		" " + good[1:],
		good[:32] + "-" + good[33:],
		strings.Repeat("g", 64),
	} {
		if _, err := Parse(s); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) err = %v, want ErrSyntax", s, err)
		}
		var d Digest
		if err := d.UnmarshalText([]byte(s)); !errors.Is(err, ErrSyntax) {
			t.Errorf("UnmarshalText(%q) err = %v, want ErrSyntax", s, err)
		}
	}
}
