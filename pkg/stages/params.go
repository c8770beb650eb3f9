package stages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// DecodeParams decodes a stage's params into v, a pointer to a struct with
// json tags, the way built-in kinds read their configuration. Unknown params
// and values of the wrong type are Problems naming the param
// ("params.rows"), so the loader can point at its line.
func DecodeParams(params map[string]Param, v any) []Problem {
	plain := make(map[string]any, len(params))
	for k, p := range params {
		plain[k] = p.Value
	}
	b, err := json.Marshal(plain)
	if err != nil {
		return []Problem{{Field: "params", Msg: fmt.Sprintf("params cannot be read: %v", err)}}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return []Problem{{Field: "params." + te.Field, Msg: fmt.Sprintf("param %s: expected %s, got %s", te.Field, typeName(te.Type.Kind().String()), te.Value)}}
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return []Problem{{Field: "params." + name, Msg: fmt.Sprintf("unknown param %q", name)}}
	}
	return []Problem{{Field: "params", Msg: fmt.Sprintf("params: %v", err)}}
}

func typeName(kind string) string {
	switch kind {
	case "int", "int32", "int64", "uint", "uint32", "uint64":
		return "a whole number"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "slice":
		return "a list"
	case "map", "struct":
		return "a mapping"
	}
	return kind
}
