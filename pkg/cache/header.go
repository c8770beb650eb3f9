package cache

import (
	"bytes"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
)

// decodeHeaderFast reads a record header exactly as orch writes it
// (json.Marshal of recordWire: fields in order, no spaces, no escapes in
// names) without reflection, and reports false at the first byte that
// differs from that shape; the caller then decodes with encoding/json, which
// accepts anything valid. orch plan reads a header per stage, and
// encoding/json spent most of a plan's record time here.
func decodeHeaderFast(b []byte, w *recordWire) bool {
	p := headerParser{b: b}
	var version, duration int64
	ok := p.lit(`{"version":`) && p.int(&version) &&
		p.lit(`,"key":`) && p.digest(&w.Key) &&
		p.lit(`,"pipeline":`) && p.str(&w.Pipeline) &&
		p.lit(`,"stage":`) && p.str(&w.Stage) &&
		p.lit(`,"outputs":`) && p.outputs(&w.Outputs) &&
		p.lit(`,"log":`) && p.digest(&w.Log) &&
		p.lit(`,"started":`) && p.time(&w.Started) &&
		p.lit(`,"duration_ns":`) && p.int(&duration) &&
		p.lit(`}`) && p.i == len(p.b)
	w.Version, w.Duration = int(version), time.Duration(duration)
	return ok
}

type headerParser struct {
	b []byte
	i int
}

func (p *headerParser) lit(s string) bool {
	if !bytes.HasPrefix(p.b[p.i:], []byte(s)) {
		return false
	}
	p.i += len(s)
	return true
}

// str reads a string without escapes or control characters.
func (p *headerParser) str(s *string) bool {
	v, ok := p.raw()
	*s = string(v)
	return ok
}

func (p *headerParser) raw() ([]byte, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	end := bytes.IndexByte(p.b[p.i+1:], '"')
	if end < 0 {
		return nil, false
	}
	v := p.b[p.i+1 : p.i+1+end]
	for _, c := range v {
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return nil, false // escapes and non-ASCII: leave them to encoding/json
		}
	}
	p.i += end + 2
	return v, true
}

func (p *headerParser) digest(d *digest.Digest) bool {
	v, ok := p.raw()
	if !ok || len(v) != 2*len(d) {
		return false
	}
	_, err := hex.Decode(d[:], v)
	return err == nil
}

func (p *headerParser) int(n *int64) bool {
	j := p.i
	if j < len(p.b) && p.b[j] == '-' {
		j++
	}
	for j < len(p.b) && p.b[j] >= '0' && p.b[j] <= '9' {
		j++
	}
	v, err := strconv.ParseInt(string(p.b[p.i:j]), 10, 64)
	if err != nil {
		return false
	}
	*n, p.i = v, j
	return true
}

func (p *headerParser) time(t *time.Time) bool {
	v, ok := p.raw()
	if !ok {
		return false
	}
	err := t.UnmarshalText(v)
	return err == nil
}

// outputs reads {"NAME":{"digest":"…","size":N[,"dir":true]},…} or null.
func (p *headerParser) outputs(m *map[string]Output) bool {
	if p.lit(`null`) {
		*m = nil
		return true
	}
	if !p.lit(`{`) {
		return false
	}
	*m = map[string]Output{}
	if p.lit(`}`) {
		return true
	}
	for {
		var name string
		var o Output
		if !(p.str(&name) && p.lit(`:{"digest":`) && p.digest(&o.Digest) && p.lit(`,"size":`) && p.int(&o.Size)) {
			return false
		}
		if p.lit(`,"dir":true`) {
			o.Dir = true
		}
		if _, dup := (*m)[name]; dup || !p.lit(`}`) {
			return false
		}
		(*m)[name] = o
		if p.lit(`}`) {
			return true
		}
		if !p.lit(`,`) {
			return false
		}
	}
}
