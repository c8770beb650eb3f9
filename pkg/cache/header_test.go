package cache

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
)

// checkHeaderFast holds decodeHeaderFast to encoding/json: whenever it
// accepts a header, it must read what json.Unmarshal reads.
func checkHeaderFast(t *testing.T, b []byte, mustAccept bool) {
	t.Helper()
	var fast recordWire
	ok := decodeHeaderFast(b, &fast)
	if mustAccept && !ok {
		t.Fatalf("fast path refused a header orch writes: %s", b)
	}
	if !ok {
		return
	}
	var slow recordWire
	if err := json.Unmarshal(b, &slow); err != nil {
		t.Fatalf("fast path accepted what encoding/json refuses (%v): %s", err, b)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("fast path read\n%+v\nencoding/json read\n%+v\nfrom %s", fast, slow, b)
	}
}

func TestHeaderFastMatchesJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	names := []string{"train", "s9_0", "a-b", "x.y", "naïve", `q"uote`, "<tag>", ""}
	for i := range 500 {
		w := recordWire{
			Version: RecordVersion, Key: digest.String(string(rune(i))), Pipeline: names[rng.IntN(len(names))],
			Stage: names[rng.IntN(len(names))], Log: digest.String("log"),
			Started:  time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).In(time.FixedZone("z", rng.IntN(20)*1800-36000)),
			Duration: time.Duration(rng.Int64N(1e12)),
		}
		if i%7 == 0 {
			w.Log = digest.Zero
		}
		if i%5 != 0 {
			w.Outputs = map[string]Output{}
			for range rng.IntN(4) {
				w.Outputs[names[rng.IntN(len(names))]] = Output{Digest: digest.String(names[rng.IntN(len(names))]), Size: rng.Int64N(1 << 40), Dir: rng.IntN(2) == 0}
			}
		}
		b, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		plain := true
		for _, c := range b {
			if c >= 0x80 || c == '\\' {
				plain = false
			}
		}
		checkHeaderFast(t, b, plain)
	}
}

func FuzzHeaderFast(f *testing.F) {
	b, _ := json.Marshal(recordWire{Version: 2, Key: digest.String("k"), Pipeline: "p", Stage: "s",
		Outputs: map[string]Output{"out": {Digest: digest.String("o"), Size: 3, Dir: true}}, Started: time.Unix(1, 2).UTC(), Duration: 5})
	f.Add(b)
	f.Add([]byte(`{"version":1,"key":"","outputs":null}`))
	f.Fuzz(func(t *testing.T, b []byte) { checkHeaderFast(t, b, false) })
}
