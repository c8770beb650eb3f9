package cache

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/orch-dev/orch/pkg/digest"
)

// The canonical encoding is json.Marshal's: keys computed by every earlier
// orch must stay the same.
func checkEncodeMatchesJSON(t *testing.T, p *Preimage) {
	t.Helper()
	q := *p
	if q.Version == "" {
		q.Version = KeyVersion
	}
	q.Outputs = sortedCopy(p.Outputs)
	want, err := json.Marshal(&q)
	if err != nil {
		t.Fatal(err)
	}
	if got := appendPreimage(nil, &q); !bytes.Equal(got, want) {
		t.Fatalf("appendPreimage differs from json.Marshal:\n got %s\nwant %s", got, want)
	}
}

// tricky holds strings that exercise every escape of encoding/json.
var tricky = []string{
	"", "plain", `quote " backslash \ slash /`, "<html> & </html>", "tab\tnl\ncr\r",
	"\b\f\x00\x01\x1f\x7f", "line\u2028para\u2029", "ünïcødé ✓ 🚀", "bad \xff utf8 \xc3",
	"\xe2\x80", "{{inputs.a}} | sha1sum > {{outputs.out}}",
}

func TestEncodeMatchesJSON(t *testing.T) {
	checkEncodeMatchesJSON(t, &Preimage{})
	checkEncodeMatchesJSON(t, &Preimage{Code: map[string]digest.Digest{}, Params: map[string]string{}, Env: map[string]string{}, Inputs: map[string]Input{}, Outputs: []string{}})
	checkEncodeMatchesJSON(t, basePreimage())
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string {
		if rng.IntN(3) == 0 {
			b := make([]byte, rng.IntN(12))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			return string(b)
		}
		return tricky[rng.IntN(len(tricky))]
	}
	for range 2000 {
		p := &Preimage{Version: pick(), Kind: pick(), KindVersion: pick(), Command: pick(), State: pick()}
		for range rng.IntN(4) {
			if p.Code == nil {
				p.Code, p.Params, p.Env, p.Inputs = map[string]digest.Digest{}, map[string]string{}, map[string]string{}, map[string]Input{}
			}
			p.Code[pick()] = digest.String(pick())
			p.Params[pick()] = pick()
			p.Env[pick()] = pick()
			p.Inputs[pick()] = Input{Source: pick(), Digest: digest.String(pick())}
			p.Outputs = append(p.Outputs, pick())
		}
		checkEncodeMatchesJSON(t, p)
	}
}

func FuzzEncodeMatchesJSON(f *testing.F) {
	for _, s := range tricky {
		f.Add(s, s, s)
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		checkEncodeMatchesJSON(t, &Preimage{
			Kind: a, Command: b, State: c,
			Code:    map[string]digest.Digest{a: digest.String(b)},
			Params:  map[string]string{a: b, c: a},
			Env:     map[string]string{c: b},
			Inputs:  map[string]Input{b: {Source: c}},
			Outputs: []string{a, b, c},
		})
	})
}
