package cache

import (
	"encoding/hex"
	"maps"
	"slices"
	"unicode/utf8"

	"github.com/orch-dev/orch/pkg/digest"
)

// appendPreimage appends q's canonical encoding: byte for byte what
// json.Marshal(q) writes (struct fields in order, omitempty, map keys sorted,
// encoding/json's string escaping), without reflection. Keys are computed for
// every stage on every plan and run, so this is on the hot path; the tests
// hold it to json.Marshal on generated and fuzzed pre-images.
func appendPreimage(b []byte, q *Preimage) []byte {
	b = append(b, `{"v":`...)
	b = appendJSONString(b, q.Version)
	b = append(b, `,"kind":`...)
	b = appendJSONString(b, q.Kind)
	b = append(b, `,"kind_version":`...)
	b = appendJSONString(b, q.KindVersion)
	if q.Command != "" {
		b = append(b, `,"command":`...)
		b = appendJSONString(b, q.Command)
	}
	if len(q.Code) > 0 {
		b = append(b, `,"code":{`...)
		for i, k := range slices.Sorted(maps.Keys(q.Code)) {
			b = appendKey(b, i, k)
			b = appendDigest(b, q.Code[k])
		}
		b = append(b, '}')
	}
	b = appendStringMap(b, "params", q.Params)
	b = appendStringMap(b, "env", q.Env)
	if len(q.Inputs) > 0 {
		b = append(b, `,"inputs":{`...)
		for i, k := range slices.Sorted(maps.Keys(q.Inputs)) {
			in := q.Inputs[k]
			b = appendKey(b, i, k)
			b = append(b, `{"src":`...)
			b = appendJSONString(b, in.Source)
			b = append(b, `,"digest":`...)
			b = appendDigest(b, in.Digest)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	if len(q.Outputs) > 0 {
		b = append(b, `,"outputs":[`...)
		for i, o := range q.Outputs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, o)
		}
		b = append(b, ']')
	}
	if q.State != "" {
		b = append(b, `,"state":`...)
		b = appendJSONString(b, q.State)
	}
	return append(b, '}')
}

func appendStringMap(b []byte, name string, m map[string]string) []byte {
	if len(m) == 0 {
		return b
	}
	b = append(append(append(b, `,"`...), name...), `":{`...)
	for i, k := range slices.Sorted(maps.Keys(m)) {
		b = appendKey(b, i, k)
		b = appendJSONString(b, m[k])
	}
	return append(b, '}')
}

func appendKey(b []byte, i int, k string) []byte {
	if i > 0 {
		b = append(b, ',')
	}
	return append(appendJSONString(b, k), ':')
}

func appendDigest(b []byte, d digest.Digest) []byte {
	b = append(b, '"')
	b = hex.AppendEncode(b, d[:])
	return append(b, '"')
}

// appendJSONString is encoding/json's string encoding with HTML escaping
// (its default): <, > and & as \u003c, \u003e, \u0026; U+2028 and U+2029
// escaped; invalid UTF-8 as \ufffd.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
