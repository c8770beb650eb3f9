package cache

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/orch-dev/orch/pkg/digest"
)

func d(s string) digest.Digest { return digest.String(s) }

// basePreimage returns a fully populated pre-image; every call returns a new
// value, its maps filled in one order.
func basePreimage() *Preimage {
	return &Preimage{
		Version:     KeyVersion,
		Kind:        "exec",
		KindVersion: "orch.exec.v1",
		Command:     "python train.py --lr {{params.lr}}",
		Code:        map[string]digest.Digest{"scripts/train.py": d("train"), "scripts/util.py": d("util")},
		Params:      map[string]string{"lr": "0.1", "epochs": "10", "layers": "[64,32]"},
		Env:         map[string]string{"SEED": EnvValue("42", true), "TOKEN": EnvValue("", false)},
		Inputs: map[string]Input{
			"features": {Source: "features.table", Digest: d("features")},
			"labels":   {Source: "data/labels.csv", Digest: d("labels")},
		},
		Outputs: []string{"metrics=metrics.json", "model=model.bin"},
	}
}

// The same content built in another order encodes to the same bytes.
func TestPreimageCanonical(t *testing.T) {
	a := basePreimage()
	b := &Preimage{Outputs: []string{"model=model.bin", "metrics=metrics.json"}}
	b.Inputs = map[string]Input{}
	b.Inputs["labels"] = Input{Source: "data/labels.csv", Digest: d("labels")}
	b.Inputs["features"] = Input{Source: "features.table", Digest: d("features")}
	b.Env = map[string]string{}
	b.Env["TOKEN"] = EnvValue("", false)
	b.Env["SEED"] = EnvValue("42", true)
	b.Params = map[string]string{}
	for _, k := range []string{"layers", "epochs", "lr"} {
		b.Params[k] = a.Params[k]
	}
	b.Code = map[string]digest.Digest{}
	b.Code["scripts/util.py"] = d("util")
	b.Code["scripts/train.py"] = d("train")
	b.Command, b.KindVersion, b.Kind = a.Command, a.KindVersion, a.Kind
	// b.Version left empty: Encode fills in the current version.

	ea, eb := a.Encode(), b.Encode()
	if string(ea) != string(eb) {
		t.Fatalf("same content, different encodings:\n%s\n%s", ea, eb)
	}
	if a.Key() != b.Key() {
		t.Fatalf("same content, different keys")
	}
	for range 20 {
		if c := basePreimage(); string(c.Encode()) != string(ea) {
			t.Fatalf("encoding is not stable:\n%s\n%s", c.Encode(), ea)
		}
	}
	var v map[string]any
	if err := json.Unmarshal(ea, &v); err != nil {
		t.Fatalf("encoding is not JSON: %v", err)
	}
	if v["v"] != KeyVersion {
		t.Errorf("encoding carries version %v, want %s", v["v"], KeyVersion)
	}
	// Nil and empty maps are the same content.
	e1 := &Preimage{Kind: "exec", KindVersion: "v1", Command: "true"}
	e2 := &Preimage{Kind: "exec", KindVersion: "v1", Command: "true", Code: map[string]digest.Digest{},
		Params: map[string]string{}, Env: map[string]string{}, Inputs: map[string]Input{}, Outputs: []string{}}
	if e1.Key() != e2.Key() {
		t.Errorf("nil and empty collections give different keys:\n%s\n%s", e1.Encode(), e2.Encode())
	}
}

// Every semantic change gives a new key, and no two changes give the same one.
func TestPreimageEveryFieldChangesKey(t *testing.T) {
	muts := []struct {
		name string
		fn   func(p *Preimage)
	}{
		{"version", func(p *Preimage) { p.Version = "orch.key.v0" }},
		{"kind", func(p *Preimage) { p.Kind = "train" }},
		{"kind version", func(p *Preimage) { p.KindVersion = "orch.exec.v2" }},
		{"command", func(p *Preimage) { p.Command += " " }},
		{"command emptied", func(p *Preimage) { p.Command = "" }},
		{"code digest", func(p *Preimage) { p.Code["scripts/train.py"] = d("train v2") }},
		{"code added", func(p *Preimage) { p.Code["scripts/new.py"] = d("new") }},
		{"code removed", func(p *Preimage) { delete(p.Code, "scripts/util.py") }},
		{"code renamed", func(p *Preimage) {
			p.Code["scripts/util2.py"] = p.Code["scripts/util.py"]
			delete(p.Code, "scripts/util.py")
		}},
		{"code all removed", func(p *Preimage) { p.Code = nil }},
		{"param value", func(p *Preimage) { p.Params["lr"] = "0.05" }},
		{"param value same number other text", func(p *Preimage) { p.Params["lr"] = "0.10" }},
		{"param type", func(p *Preimage) { p.Params["epochs"] = `"10"` }},
		{"param added", func(p *Preimage) { p.Params["l2"] = "0.01" }},
		{"param removed", func(p *Preimage) { delete(p.Params, "epochs") }},
		{"param renamed", func(p *Preimage) { p.Params["rate"] = p.Params["lr"]; delete(p.Params, "lr") }},
		{"param list", func(p *Preimage) { p.Params["layers"] = "[32,64]" }},
		{"env value", func(p *Preimage) { p.Env["SEED"] = EnvValue("43", true) }},
		{"env set", func(p *Preimage) { p.Env["TOKEN"] = EnvValue("", true) }},
		{"env unset", func(p *Preimage) { p.Env["SEED"] = EnvValue("", false) }},
		{"env added", func(p *Preimage) { p.Env["HOME"] = EnvValue("/root", true) }},
		{"env removed", func(p *Preimage) { delete(p.Env, "TOKEN") }},
		{"input digest", func(p *Preimage) { p.Inputs["labels"] = Input{Source: "data/labels.csv", Digest: d("labels v2")} }},
		{"input source", func(p *Preimage) { p.Inputs["labels"] = Input{Source: "data/labels2.csv", Digest: d("labels")} }},
		{"input added", func(p *Preimage) { p.Inputs["extra"] = Input{Source: "x.csv", Digest: d("x")} }},
		{"input removed", func(p *Preimage) { delete(p.Inputs, "features") }},
		{"input renamed", func(p *Preimage) { p.Inputs["feats"] = p.Inputs["features"]; delete(p.Inputs, "features") }},
		{"output added", func(p *Preimage) { p.Outputs = append(p.Outputs, "plot=plot.png") }},
		{"output removed", func(p *Preimage) { p.Outputs = p.Outputs[:1] }},
		{"output path", func(p *Preimage) { p.Outputs[1] = "model=model.pt" }},
	}
	base := basePreimage().Key()
	seen := map[digest.Digest]string{base: "base"}
	for _, m := range muts {
		p := basePreimage()
		m.fn(p)
		k := p.Key()
		if prev, dup := seen[k]; dup {
			t.Errorf("%s: same key as %s", m.name, prev)
			continue
		}
		seen[k] = m.name
	}
}

// File names are bytes on Linux; two code files whose names differ only in
// bytes that are not UTF-8 must not share a key.
func TestPreimageNonUTF8Paths(t *testing.T) {
	a, b := basePreimage(), basePreimage()
	a.Code["data/caf\xe9.py"] = d("same")
	b.Code["data/caf\xeb.py"] = d("same")
	if a.Key() == b.Key() {
		t.Errorf("code paths %q and %q give the same key (the encoding replaces invalid UTF-8):\n%s", "data/caf\xe9.py", "data/caf\xeb.py", a.Encode())
	}
}

// Diff names each component that changed, in a stable order.
func TestDiff(t *testing.T) {
	long := strings.Repeat("x", 50)
	cases := []struct {
		name string
		fn   func(p *Preimage)
		want []string
	}{
		{"nothing", func(*Preimage) {}, nil},
		{"key format", func(p *Preimage) { p.Version = "orch.key.v2" }, []string{"cache key format orch.key.v1 → orch.key.v2"}},
		{"kind", func(p *Preimage) { p.Kind, p.KindVersion = "train", "orch.train.v1" }, []string{"kind exec → train"}},
		{"kind version", func(p *Preimage) { p.KindVersion = "orch.exec.v2" }, []string{"kind version orch.exec.v1 → orch.exec.v2"}},
		{"command", func(p *Preimage) { p.Command = "python train.py" }, []string{"command changed"}},
		{"code changed", func(p *Preimage) { p.Code["scripts/train.py"] = d("v2") }, []string{"code scripts/train.py changed"}},
		{"code added", func(p *Preimage) { p.Code["scripts/new.py"] = d("new") }, []string{"code scripts/new.py added"}},
		{"code removed", func(p *Preimage) { delete(p.Code, "scripts/util.py") }, []string{"code scripts/util.py removed"}},
		{"param changed", func(p *Preimage) { p.Params["lr"] = "0.05" }, []string{"param train.lr 0.1 → 0.05"}},
		{"param added", func(p *Preimage) { p.Params["l2"] = "0.01" }, []string{"param train.l2 added (0.01)"}},
		{"param removed", func(p *Preimage) { delete(p.Params, "epochs") }, []string{"param train.epochs removed (was 10)"}},
		{"param long", func(p *Preimage) { p.Params["layers"] = long }, []string{"param train.layers [64,32] → " + long[:37] + "..."}},
		{"env changed", func(p *Preimage) { p.Env["SEED"] = EnvValue("43", true) }, []string{"env SEED changed"}},
		{"env set", func(p *Preimage) { p.Env["TOKEN"] = EnvValue("hunter2", true) }, []string{"env TOKEN changed"}},
		{"env added", func(p *Preimage) { p.Env["API_KEY"] = EnvValue("s3cr3t", true) }, []string{"env API_KEY added"}},
		{"env removed", func(p *Preimage) { delete(p.Env, "SEED") }, []string{"env SEED removed"}},
		{"input changed", func(p *Preimage) { p.Inputs["features"] = Input{Source: "features.table", Digest: d("f2")} }, []string{"input features.table changed"}},
		{"input source changed", func(p *Preimage) { p.Inputs["labels"] = Input{Source: "clean.labels", Digest: d("labels")} }, []string{"input labels: data/labels.csv → clean.labels"}},
		{"input added", func(p *Preimage) { p.Inputs["extra"] = Input{Source: "data/extra.csv", Digest: d("x")} }, []string{"input data/extra.csv added"}},
		{"input removed", func(p *Preimage) { delete(p.Inputs, "labels") }, []string{"input data/labels.csv removed"}},
		{"outputs", func(p *Preimage) { p.Outputs = []string{"model=model.bin"} }, []string{"outputs [metrics=metrics.json model=model.bin] → [model=model.bin]"}},
		{"outputs reordered", func(p *Preimage) { p.Outputs = []string{"model=model.bin", "metrics=metrics.json"} }, nil},
		{"several, in order", func(p *Preimage) {
			p.Outputs = append(p.Outputs, "plot=p.png")
			p.Inputs["features"] = Input{Source: "features.table", Digest: d("f2")}
			p.Env["SEED"] = "x"
			p.Params["lr"], p.Params["epochs"] = "1", "20"
			p.Code["scripts/util.py"], p.Code["scripts/train.py"] = d("u2"), d("t2")
			p.Command = "x"
			p.KindVersion = "orch.exec.v9"
		}, []string{
			"kind version orch.exec.v1 → orch.exec.v9",
			"command changed",
			"code scripts/train.py changed",
			"code scripts/util.py changed",
			"param train.epochs 10 → 20",
			"param train.lr 0.1 → 1",
			"env SEED changed",
			"input features.table changed",
			"outputs [metrics=metrics.json model=model.bin] → [metrics=metrics.json model=model.bin plot=p.png]",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			old, cur := basePreimage(), basePreimage()
			c.fn(cur)
			got := Diff("train", old, cur)
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("Diff:\n got %q\nwant %q", got, c.want)
			}
			if len(c.want) == 0 && old.Key() != cur.Key() {
				t.Errorf("no reasons, but the keys differ")
			}
			if len(c.want) > 0 && old.Key() == cur.Key() {
				t.Errorf("reasons %q, but the keys are equal", got)
			}
		})
	}
	// Nil and empty maps are no difference.
	a := &Preimage{Version: KeyVersion, Kind: "exec"}
	b := &Preimage{Version: KeyVersion, Kind: "exec", Code: map[string]digest.Digest{}, Params: map[string]string{}, Env: map[string]string{}, Inputs: map[string]Input{}, Outputs: []string{}}
	if rs := Diff("s", a, b); len(rs) != 0 {
		t.Errorf("Diff(nil maps, empty maps) = %q, want none", rs)
	}
}

// Env values reach neither the pre-image nor the reasons.
func TestEnvValueHidesValue(t *testing.T) {
	secrets := []string{"hunter2", "s3cr3t-token-value", "AKIAIOSFODNN7EXAMPLE"}
	for _, s := range secrets {
		v := EnvValue(s, true)
		if v == "" || strings.Contains(v, s) {
			t.Errorf("EnvValue(%q) = %q: empty or holds the value", s, v)
		}
		if v != EnvValue(s, true) {
			t.Errorf("EnvValue(%q) is not deterministic", s)
		}
		old, cur := basePreimage(), basePreimage()
		old.Env["TOKEN"] = EnvValue("previous-"+s, true)
		cur.Env["TOKEN"] = v
		cur.Env["NEW"] = v
		for _, r := range Diff("train", old, cur) {
			if strings.Contains(r, s) || strings.Contains(r, v) || strings.Contains(r, "previous-") {
				t.Errorf("reason %q shows an env value", r)
			}
		}
		if enc := string(cur.Encode()); strings.Contains(enc, s) {
			t.Errorf("pre-image encoding holds the env value %q: %s", s, enc)
		}
	}
	if EnvValue("", false) != "" {
		t.Errorf("EnvValue of an unset variable = %q, want \"\"", EnvValue("", false))
	}
	if EnvValue("", true) == "" {
		t.Errorf("EnvValue of a variable set to \"\" is the same as unset")
	}
	if EnvValue("a", true) == EnvValue("b", true) {
		t.Errorf("EnvValue gives two values the same form")
	}
}
