package cache

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/orch-dev/orch/pkg/digest"
)

// KeyVersion tags the pre-image encoding. Bump it when the meaning of a field
// changes; every key changes with it.
const KeyVersion = "orch.key.v1"

// Input is one input of a stage in a Preimage.
type Input struct {
	// Source is what the pipeline says: "prepare.data" or "data/raw.csv".
	Source string        `json:"src"`
	Digest digest.Digest `json:"digest"`
}

// Preimage is the canonical content of a cache key. encoding/json writes map
// keys sorted, so the encoding is canonical without further work.
type Preimage struct {
	Version     string `json:"v"`
	Kind        string `json:"kind"`
	KindVersion string `json:"kind_version"`
	Command     string `json:"command,omitempty"`
	// Code maps a workspace-relative slash path to its content digest.
	Code map[string]digest.Digest `json:"code,omitempty"`
	// Params maps a param name to its canonical text (the YAML scalar as
	// written, or canonical JSON for lists and maps).
	Params map[string]string `json:"params,omitempty"`
	// Env maps a variable name to the digest of its value ("" when unset).
	Env     map[string]string `json:"env,omitempty"`
	Inputs  map[string]Input  `json:"inputs,omitempty"`
	Outputs []string          `json:"outputs,omitempty"`
	// State is what the kind reads of the workspace besides its inputs
	// (stages.Volatile), "" when nothing: validate's deployed model.
	State string `json:"state,omitempty"`
	// Needs lists order-only dependencies; they do not enter by content.
}

// Encode returns the canonical encoding of p. Strings that are not valid
// UTF-8 (file names can be any bytes) are escaped first: encoding/json would
// replace their bad bytes with U+FFFD and make distinct names collide.
func (p *Preimage) Encode() []byte {
	q := *p
	if q.Version == "" {
		q.Version = KeyVersion
	}
	q.Outputs = sortedCopy(p.Outputs)
	if !p.validUTF8() {
		q.Code = map[string]digest.Digest{}
		for k, v := range p.Code {
			q.Code[SafeString(k)] = v
		}
		q.Params = map[string]string{}
		for k, v := range p.Params {
			q.Params[SafeString(k)] = SafeString(v)
		}
		q.Inputs = map[string]Input{}
		for k, v := range p.Inputs {
			v.Source = SafeString(v.Source)
			q.Inputs[SafeString(k)] = v
		}
		q.Command = SafeString(p.Command)
		for i, o := range q.Outputs {
			q.Outputs[i] = SafeString(o)
		}
	}
	return appendPreimage(make([]byte, 0, 512), &q)
}

// Key returns the cache key of p.
func (p *Preimage) Key() digest.Digest { return digest.Bytes(p.Encode()) }

// EnvValue returns the Preimage form of an environment variable's value: a
// full, domain-separated digest of the value, so the value itself never
// reaches the cache, or "" when unset. (A digest cannot protect a weak,
// guessable secret from brute force; declare such variables sparingly.)
func EnvValue(v string, set bool) string {
	if !set {
		return ""
	}
	return "b3:" + digest.String("orch.env.v1\x00"+v).String()
}

// Diff returns the reasons old and cur differ, in a stable order, with the
// stage name used to qualify params (`param train.lr 0.1 → 0.05`).
func Diff(stage string, old, cur *Preimage) []string {
	var rs []string
	if old.Version != cur.Version {
		rs = append(rs, fmt.Sprintf("cache key format %s → %s", old.Version, cur.Version))
	}
	if old.Kind != cur.Kind {
		rs = append(rs, fmt.Sprintf("kind %s → %s", old.Kind, cur.Kind))
	} else if old.KindVersion != cur.KindVersion {
		rs = append(rs, fmt.Sprintf("kind version %s → %s", old.KindVersion, cur.KindVersion))
	}
	if old.Command != cur.Command {
		rs = append(rs, "command changed")
	}
	for _, k := range unionKeys(old.Code, cur.Code) {
		o, oOK := old.Code[k]
		c, cOK := cur.Code[k]
		switch {
		case !oOK:
			rs = append(rs, fmt.Sprintf("code %s added", k))
		case !cOK:
			rs = append(rs, fmt.Sprintf("code %s removed", k))
		case o != c:
			rs = append(rs, fmt.Sprintf("code %s changed", k))
		}
	}
	for _, k := range unionKeys(old.Params, cur.Params) {
		o, oOK := old.Params[k]
		c, cOK := cur.Params[k]
		switch {
		case !oOK:
			rs = append(rs, fmt.Sprintf("param %s.%s added (%s)", stage, k, clip(c)))
		case !cOK:
			rs = append(rs, fmt.Sprintf("param %s.%s removed (was %s)", stage, k, clip(o)))
		case o != c:
			rs = append(rs, fmt.Sprintf("param %s.%s %s → %s", stage, k, clip(o), clip(c)))
		}
	}
	for _, k := range unionKeys(old.Env, cur.Env) {
		o, oOK := old.Env[k]
		c, cOK := cur.Env[k]
		switch {
		case !oOK:
			rs = append(rs, fmt.Sprintf("env %s added", k))
		case !cOK:
			rs = append(rs, fmt.Sprintf("env %s removed", k))
		case o != c:
			rs = append(rs, fmt.Sprintf("env %s changed", k))
		}
	}
	for _, k := range unionKeys(old.Inputs, cur.Inputs) {
		o, oOK := old.Inputs[k]
		c, cOK := cur.Inputs[k]
		switch {
		case !oOK:
			rs = append(rs, fmt.Sprintf("input %s added", c.Source))
		case !cOK:
			rs = append(rs, fmt.Sprintf("input %s removed", o.Source))
		case o.Source != c.Source:
			rs = append(rs, fmt.Sprintf("input %s: %s → %s", k, o.Source, c.Source))
		case o.Digest != c.Digest:
			rs = append(rs, fmt.Sprintf("input %s changed", c.Source))
		}
	}
	if strings.Join(sortedCopy(old.Outputs), ",") != strings.Join(sortedCopy(cur.Outputs), ",") {
		rs = append(rs, fmt.Sprintf("outputs [%s] → [%s]", strings.Join(old.Outputs, " "), strings.Join(cur.Outputs, " ")))
	}
	if old.State != cur.State {
		rs = append(rs, fmt.Sprintf("state %s → %s", orNone(old.State), orNone(cur.State)))
	}
	return rs
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

func unionKeys[V any](a, b map[string]V) []string {
	ks := make([]string, 0, len(a)+len(b))
	for k := range a {
		ks = append(ks, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}

func (p *Preimage) validUTF8() bool {
	ok := utf8.ValidString(p.Command)
	for k, v := range p.Code {
		_ = v
		ok = ok && utf8.ValidString(k)
	}
	for k, v := range p.Params {
		ok = ok && utf8.ValidString(k) && utf8.ValidString(v)
	}
	for k, v := range p.Inputs {
		ok = ok && utf8.ValidString(k) && utf8.ValidString(v.Source)
	}
	for _, o := range p.Outputs {
		ok = ok && utf8.ValidString(o)
	}
	return ok
}

// SafeString returns s unchanged if it is valid UTF-8, and otherwise an
// escaped form that is valid UTF-8 and distinct for distinct inputs: U+FFFD
// followed by strconv.QuoteToASCII(s).
func SafeString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return "\ufffd" + strconv.QuoteToASCII(s)
}

// UnsafeString inverts SafeString.
func UnsafeString(s string) string {
	if rest, ok := strings.CutPrefix(s, "\ufffd"); ok {
		if u, err := strconv.Unquote(rest); err == nil && !utf8.ValidString(u) {
			return u
		}
	}
	return s
}

func orNone(state string) string {
	if state == "" {
		return "none"
	}
	return state
}
