package stages

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The hand-written number parser agrees with strconv, and its float32
// shortcut never claims a value is faithful when it is not.
func TestIngestParseFloat(t *testing.T) {
	cases := []string{"0", "-0", "1", "+1", "1.5", "-2.25", "55.23", "0.1", "1e3", "1E-3", "-1.5e+10", "123456.789",
		"0.000001", "1e-40", "3.4e39", "1e400", "9007199254740993", "12345678901234567890", "0.1234567890123456789",
		"nan", "NaN", "inf", "-Infinity", "1.", ".5", "00012.50", "16777217", "1.00000001"}
	bad := []string{"", "-", "+", ".", "e5", "1e", "1e+", "1.2.3", "abc", "1,5", "--1", "0x10", " 1", "1 "}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		digits := rng.IntN(12)
		v := float64(rng.Int64N(1_000_000_000_000)) / math.Pow(10, float64(digits))
		if rng.IntN(2) == 0 {
			v = -v
		}
		cases = append(cases, strconv.FormatFloat(v, 'f', rng.IntN(8), 64), strconv.FormatFloat(rng.NormFloat64()*1e5, 'g', -1, 64))
	}
	for _, s := range cases {
		got, faithful, ok := ingParseFloat([]byte(s))
		want, err := strconv.ParseFloat(s, 64)
		if ne, isNum := err.(*strconv.NumError); isNum && ne.Err == strconv.ErrRange {
			err = nil
		}
		if ok != (err == nil) {
			t.Errorf("%q: ok %v, strconv error %v", s, ok, err)
			continue
		}
		if ok && got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Errorf("%q: %v, want %v", s, got, want)
		}
		if ok && faithful && !ingF32Faithful(got) {
			t.Errorf("%q: claimed faithful as float32, is not", s)
		}
	}
	for _, s := range bad {
		if _, _, ok := ingParseFloat([]byte(s)); ok {
			t.Errorf("%q parsed as a number", s)
		}
	}
	for v, want := range map[float64]bool{55.23: true, 0.1: true, 1e-40: true, 0.5: true, 16777216: true,
		16777217: false, 1.00000001: false, 3.4e39: false, 123456.789: false, math.Inf(1): true} {
		if got := ingF32Faithful(v); got != want {
			t.Errorf("ingF32Faithful(%v) = %v, want %v", v, got, want)
		}
	}
}

func TestIngestParseIntDateBool(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "-0": 0, "+5": 5, "007": 7, "-42": -42, "123456789012345678": 123456789012345678,
		"9223372036854775807": math.MaxInt64, "-9223372036854775808": math.MinInt64} {
		if got, ok := ingParseInt([]byte(s)); !ok || got != want {
			t.Errorf("ingParseInt(%q) = %v, %v", s, got, ok)
		}
	}
	for _, s := range []string{"", "-", "+", "1.0", "1e3", "9223372036854775808", "12a", " 1"} {
		if v, ok := ingParseInt([]byte(s)); ok {
			t.Errorf("ingParseInt(%q) = %v, want failure", s, v)
		}
	}
	day := time.Date(1890, 1, 1, 0, 0, 0, 0, time.UTC)
	for day.Year() < 2110 {
		s := day.Format("2006-01-02")
		got, ok := ingParseDate([]byte(s))
		if want := int32(day.Unix() / 86400); !ok || got != want {
			t.Fatalf("ingParseDate(%q) = %v, %v; want %v", s, got, ok, want)
		}
		day = day.AddDate(0, 0, 1)
	}
	for _, s := range []string{"2023-02-29", "2024-13-01", "2024-00-10", "2024-04-31", "2024-1-01", "2024/01/01", "20240101", "2024-01-0x"} {
		if _, ok := ingParseDate([]byte(s)); ok {
			t.Errorf("ingParseDate(%q) succeeded", s)
		}
	}
	for s, want := range map[string]bool{"true": true, "True": true, "FALSE": false} {
		if got, ok := ingParseBool([]byte(s), false); !ok || got != want {
			t.Errorf("ingParseBool(%q)", s)
		}
	}
	if _, ok := ingParseBool([]byte("1"), false); ok {
		t.Error("an inferred bool took 1")
	}
	if v, ok := ingParseBool([]byte("yes"), true); !ok || !v {
		t.Error("a declared bool refused yes")
	}
}

func TestIngestStrTab(t *testing.T) {
	b := &ingBuilder{}
	b.reset(ingStr, nil, false, false, map[string]bool{"": true})
	var want []int32
	for i := range 5000 {
		s := fmt.Sprintf("value-%d", i%1234)
		switch i % 4 {
		case 0:
			s = s[:1+i%7] // short keys
		case 1:
			s = "a long prefix shared by many values " + s + " and a long shared suffix" // long keys
		}
		b.appendStr([]byte(s))
		want = append(want, b.codes[len(b.codes)-1])
		if got := b.dictVals[b.codes[len(b.codes)-1]]; got != s {
			t.Fatalf("row %d: code points at %q, want %q", i, got, s)
		}
	}
	seen := map[string]int32{}
	for i, c := range want {
		v := b.dictVals[c]
		if prev, ok := seen[v]; ok && prev != c {
			t.Fatalf("row %d: %q has codes %d and %d", i, v, prev, c)
		}
		seen[v] = c
	}
	if len(seen) != len(b.dictVals) {
		t.Errorf("%d distinct values, %d dictionary entries", len(seen), len(b.dictVals))
	}
}

func TestIngestLastBoundary(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"a,b\n1,2\n3", 8},
		{"a,b", -1},
		{"\"x\ny\",1\n2,\"3\n", 8},
		{"\"x\"\"\n\",1\n", 9},
		{"a\"b,c\nd", 6}, // a quote inside an unquoted field is a plain character
	} {
		if got := ingLastBoundary([]byte(tc.in), true, ','); got != tc.want {
			t.Errorf("ingLastBoundary(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// Random bytes shaped like CSV or JSON lines never crash ingest: each run
// succeeds or fails with an error naming the file.
func TestIngestRandomInputNoPanic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pieces := map[string][]string{
		"csv":   {"a", "1", "-2", "3.5", "1e9", "2024-01-01", "true", ",", ",", "\n", "\n", "\"", "\"\"", "\r\n", "x y", "", "NaN"},
		"jsonl": {"{", "}", "\"k\"", "\"j\"", ":", ",", "1", "-2.5", "true", "null", "[", "]", "\"s\\u00e9\"", "\n", " ", "\"2024-01-01\""},
	}
	dir := t.TempDir()
	for i := range 200 {
		format := "csv"
		if i%2 == 1 {
			format = "jsonl"
		}
		var b []byte
		if format == "csv" {
			b = append(b, "a,b,c\n"...)
		}
		p := pieces[format]
		if format == "csv" {
			for range rng.IntN(60) {
				b = append(b, p[rng.IntN(len(p))]...)
			}
		} else {
			values := []string{"1", "-2.5", "true", "null", "\"x\"", "\"2024-01-01\"", "[1, {\"a\": \"}\"}]", "{}", "\"\\ud83d\\ude00\""}
			for range rng.IntN(8) {
				b = append(b, '{')
				for k := range rng.IntN(4) {
					if k > 0 {
						b = append(b, ", "...)
					}
					b = append(b, fmt.Sprintf("%q: %s", []string{"k", "j", "a"}[rng.IntN(3)], values[rng.IntN(len(values))])...)
				}
				b = append(b, "}\n"...)
				if rng.IntN(10) == 0 {
					b = append(b, p[rng.IntN(len(p))]...)
				}
			}
		}
		name := fmt.Sprintf("f%d.%s", i, format)
		ingWrite(t, dir, name, string(b))
		params := map[string]any{}
		if i%5 == 0 {
			params["schema"] = map[string]any{"a": "int8", "k": "date"}
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("%s (%q): panic %v", name, b, p)
				}
			}()
			_, _, err := ingCase{kind: &Ingest{Workers: 2, blockSize: 16}, dir: dir, inputs: map[string]string{"src": name}, params: params}.run(t)
			if err != nil && !strings.Contains(err.Error(), name) {
				t.Errorf("%s (%q): error does not name the file: %v", name, b, err)
			}
			if err != nil && strings.Contains(err.Error(), "internal error") {
				t.Errorf("%s (%q): %v", name, b, err)
			}
		}()
	}
}

// BenchmarkIngestCSVParse parses one block of churn-like rows.
func BenchmarkIngestCSVParse(b *testing.B) {
	rng := rand.New(rand.NewPCG(11, 12))
	plans := []string{"Basic", "Standard", "Premium"}
	pays := []string{"electronic_check", "bank_transfer", "credit_card", "mailed_check"}
	contracts := []string{"month_to_month", "one_year", "two_year"}
	var data []byte
	for i := 0; len(data) < 8<<20; i++ {
		data = fmt.Appendf(data, "%d,20%02d-%02d-%02d,%d,%s,region_%02d,%.2f,%.2f,%d,%.1f,%d,%s,%s,%d,%d,%.3f,%d,%d,%d,%d,%d\n",
			1000000+i, 15+rng.IntN(10), 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(72), plans[rng.IntN(3)], rng.IntN(12),
			20+rng.Float64()*100, rng.Float64()*8000, rng.IntN(8), rng.Float64()*60, rng.IntN(90), pays[rng.IntN(4)],
			contracts[rng.IntN(3)], rng.IntN(2), rng.IntN(4), rng.Float64()*30, rng.IntN(5), rng.IntN(2), 1+rng.IntN(5), 1+rng.IntN(5), rng.IntN(2))
	}
	kinds := []ingKind{ingInt, ingDate, ingInt, ingStr, ingStr, ingFloat, ingFloat, ingInt, ingFloat, ingInt, ingStr, ingStr, ingInt, ingInt, ingFloat, ingInt, ingInt, ingInt, ingInt, ingInt}
	p := &ingCSVParser{delim: ','}
	for range kinds {
		p.b = append(p.b, &ingBuilder{})
	}
	nulls := map[string]bool{"": true}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for c, k := range kinds {
			p.b[c].reset(k, nil, false, false, nulls)
		}
		if _, err := p.parse(data, 1); err != nil {
			b.Fatal(err)
		}
	}
}
