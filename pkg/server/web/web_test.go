package web

import (
	"context"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/orch-dev/orch/pkg/history"
)

// get fetches path from h and parses the page.
func get(t *testing.T, h http.Handler, path string) (code int, body string, doc *html.Node) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body = rec.Body.String()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("GET %s: %d %s, not a page: %q", path, rec.Code, ct, body)
	}
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return rec.Code, body, doc
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasClass(n *html.Node, c string) bool {
	return slices.Contains(strings.Fields(attr(n, "class")), c)
}

// findAll returns the elements under n named tag ("" for any) for which ok
// holds (nil: all).
func findAll(n *html.Node, tag string, ok func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && (tag == "" || n.Data == tag) && (ok == nil || ok(n)) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func find(t *testing.T, n *html.Node, tag string, ok func(*html.Node) bool) *html.Node {
	t.Helper()
	all := findAll(n, tag, ok)
	if len(all) != 1 {
		t.Fatalf("want one <%s> matching, found %d", tag, len(all))
	}
	return all[0]
}

func byAttr(key, val string) func(*html.Node) bool {
	return func(n *html.Node) bool { return attr(n, key) == val }
}

func byClass(c string) func(*html.Node) bool {
	return func(n *html.Node) bool { return hasClass(n, c) }
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

func refreshes(doc *html.Node) bool {
	return len(findAll(doc, "meta", byAttr("http-equiv", "refresh"))) > 0
}

func wantCode(t *testing.T, path string, got, want int) {
	t.Helper()
	if got != want {
		t.Fatalf("GET %s: status %d, want %d", path, got, want)
	}
}

func TestPipelinesPage(t *testing.T) {
	f := newFixture(t)
	h := New(f.src)
	code, body, doc := get(t, h, "/")
	wantCode(t, "/", code, 200)
	card := find(t, doc, "section", byAttr("data-pipeline", "nightly"))
	if got := text(find(t, card, "p", byClass("desc"))); got != "Nightly <features> & model" {
		t.Errorf("description %q", got)
	}
	if strings.Contains(body, "<features>") || !strings.Contains(body, "Nightly &lt;features&gt; &amp; model") {
		t.Error("description not escaped")
	}
	if got := text(find(t, card, "code", byClass("cron"))); got != "0 2 * * *" {
		t.Errorf("schedule %q", got)
	}
	next := findAll(find(t, card, "ol", byClass("next")), "li", nil)
	if len(next) != 3 || !strings.Contains(text(next[0]), "Mon 23 Nov 02:00 UTC") {
		t.Errorf("next runs: %d, first %q", len(next), text(next[0]))
	}
	// The last run is the failed one, with its badge and a link to it.
	if b := find(t, find(t, card, "header", nil), "span", byClass("badge")); text(b) != "FAILED" || !hasClass(b, "st-failed") {
		t.Errorf("last run badge %q class %q", text(b), attr(b, "class"))
	}
	find(t, card, "a", byAttr("href", "/runs/"+f.failed.ID))
	if got := text(find(t, card, "span", byClass("counts"))); got != "2 hit1 ran1 failed2 skipped" {
		t.Errorf("last run counts %q", got)
	}
	// Its stages in order, each with its outcome in the last run.
	var chips []string
	for _, li := range findAll(find(t, card, "ul", byClass("chips-sm")), "li", nil) {
		chips = append(chips, text(li)+"="+attr(li, "class"))
	}
	if want := []string{"extract (hit)=st-hit", "clean (hit)=st-hit", "features (failed)=st-failed", "stats (ran)=st-ran", "train (skipped)=st-skipped", "report (skipped)=st-skipped"}; !slices.Equal(chips, want) {
		t.Errorf("stage chips %v, want %v", chips, want)
	}
	// The file that never loaded shows its load error, under its file
	// name (it has no pipeline name).
	bad := find(t, doc, "section", byAttr("data-file", f.badFile))
	if !hasClass(bad, "has-error") || attr(bad, "data-pipeline") != "" {
		t.Errorf("broken pipeline card: class %q, data-pipeline %q", attr(bad, "class"), attr(bad, "data-pipeline"))
	}
	if h := text(find(t, bad, "h2", nil)); h != "broken.yaml" {
		t.Errorf("broken pipeline card heading %q", h)
	}
	if msg := text(find(t, bad, "div", byClass("alert"))); !strings.Contains(msg, "Does not load") || !strings.Contains(msg, "nowhere") {
		t.Errorf("load error: %q", msg)
	}
	if refreshes(doc) {
		t.Error("page refreshes with no run in progress")
	}
}

func TestRunsPage(t *testing.T) {
	f := newFixture(t)
	h := New(f.src)
	rows := func(path string, want ...*history.Run) *html.Node {
		t.Helper()
		code, _, doc := get(t, h, path)
		wantCode(t, path, code, 200)
		var got, ids []string
		for _, tr := range findAll(doc, "tr", func(n *html.Node) bool { return attr(n, "data-run") != "" }) {
			got = append(got, attr(tr, "data-run"))
			b := find(t, tr, "span", byClass("badge"))
			if st := attr(tr, "data-status"); !hasClass(b, "st-"+st) || text(b) != strings.ToUpper(st) {
				t.Errorf("%s: row %s: badge %q class %q", path, attr(tr, "data-run"), text(b), attr(b, "class"))
			}
		}
		for _, r := range want {
			ids = append(ids, r.ID)
		}
		if !slices.Equal(got, ids) {
			t.Errorf("GET %s: runs %v, want %v", path, got, ids)
		}
		return doc
	}
	rows("/runs", f.failed, f.hit, f.ran)
	rows("/runs?status=failed", f.failed)
	rows("/runs?status=succeeded&pipeline=nightly", f.hit, f.ran)
	rows("/runs?status=running")
	rows("/runs?pipeline=other")

	// Pages of one: newer and older links.
	links := func(doc *html.Node) (newer, older string) {
		for _, a := range findAll(doc, "a", nil) {
			switch attr(a, "rel") {
			case "prev":
				newer = attr(a, "href")
			case "next":
				older = attr(a, "href")
			}
		}
		return
	}
	doc := rows("/runs?pipeline=nightly&limit=1", f.failed)
	if n, o := links(doc); n != "" || o != "/runs?limit=1&page=2&pipeline=nightly" {
		t.Errorf("page 1 links %q %q", n, o)
	}
	doc = rows("/runs?pipeline=nightly&limit=1&page=2", f.hit)
	if n, o := links(doc); n != "/runs?limit=1&pipeline=nightly" || o != "/runs?limit=1&page=3&pipeline=nightly" {
		t.Errorf("page 2 links %q %q", n, o)
	}
	doc = rows("/runs?pipeline=nightly&limit=1&page=3", f.ran)
	if _, o := links(doc); o != "" {
		t.Errorf("last page links to an older page %q", o)
	}
	// The status chips keep the other filters and go back to page 1.
	chips := find(t, doc, "nav", byClass("chips"))
	if href := attr(find(t, chips, "a", byClass("st-failed")), "href"); href != "/runs?limit=1&pipeline=nightly&status=failed" {
		t.Errorf("failed chip links to %q", href)
	}
	// The filter form keeps the chosen values.
	sel := find(t, doc, "select", byAttr("name", "pipeline"))
	if opt := find(t, sel, "option", func(n *html.Node) bool { return attr(n, "value") == "nightly" }); !slices.ContainsFunc(opt.Attr, func(a html.Attribute) bool { return a.Key == "selected" }) {
		t.Error("pipeline filter not selected")
	}
	// One option per loaded pipeline: the file that never loaded has no
	// name to filter by.
	var opts []string
	for _, o := range findAll(sel, "option", nil) {
		opts = append(opts, attr(o, "value"))
	}
	if want := []string{"", "nightly"}; !slices.Equal(opts, want) {
		t.Errorf("pipeline filter options %q, want %q", opts, want)
	}

	for path, msg := range map[string]string{
		"/runs?status=bogus": `Unknown run status "bogus"`,
		"/runs?limit=0":      "?limit=0: want a whole number from 1 to 200",
		"/runs?page=x":       "?page=x: want a whole number",
	} {
		code, _, doc := get(t, h, path)
		wantCode(t, path, code, http.StatusBadRequest)
		if got := text(find(t, doc, "p", byClass("error-msg"))); !strings.Contains(got, msg) {
			t.Errorf("GET %s: %q, want %q", path, got, msg)
		}
	}
}

var translate = regexp.MustCompile(`^translate\(([0-9.]+) ([0-9.]+)\)$`)

func TestRunPage(t *testing.T) {
	f := newFixture(t)
	h := New(f.src)
	path := "/runs/" + f.failed.ID
	code, body, doc := get(t, h, path)
	wantCode(t, path, code, 200)
	svg := find(t, doc, "svg", byAttr("id", "dag"))

	// One node per stage, with the run's status, a text label, and a link
	// to its log.
	want := statusesOf(f.failed)
	if want["extract"] != history.Hit || want["stats"] != history.Ran || want["features"] != history.Failed || want["train"] != history.Skipped || want["report"] != history.Skipped {
		t.Fatalf("fixture run statuses %v", want)
	}
	x := map[string]float64{}
	nodes := findAll(svg, "a", byClass("node"))
	if len(nodes) != len(want) {
		t.Fatalf("%d nodes, want %d", len(nodes), len(want))
	}
	for _, n := range nodes {
		name, st := attr(n, "data-stage"), attr(n, "data-status")
		if st != want[name] || !hasClass(n, "st-"+st) {
			t.Errorf("node %s: status %s class %q, want %s", name, st, attr(n, "class"), want[name])
		}
		if got := text(find(t, n, "text", byClass("pill-text"))); got != statusLabel(st) {
			t.Errorf("node %s: label %q", name, got)
		}
		if href := attr(n, "href"); href != "/runs/"+f.failed.ID+"/stages/"+name+"/log" {
			t.Errorf("node %s: href %q", name, href)
		}
		m := translate.FindStringSubmatch(attr(n, "transform"))
		if m == nil {
			t.Fatalf("node %s: transform %q", name, attr(n, "transform"))
		}
		x[name], _ = strconv.ParseFloat(m[1], 64)
	}
	// Layers run left to right along every dependency.
	if !(x["extract"] < x["clean"] && x["clean"] == x["features"] && x["features"] < x["train"] && x["train"] == x["stats"] && x["stats"] < x["report"]) {
		t.Errorf("layers: %v", x)
	}
	// One edge per dependency, the order-only one included.
	var edges []string
	for _, e := range findAll(svg, "path", byClass("edge")) {
		edges = append(edges, attr(e, "data-from")+">"+attr(e, "data-to"))
	}
	slices.Sort(edges)
	wantEdges := []string{"clean>stats", "clean>train", "extract>clean", "extract>features", "extract>report", "features>train", "stats>report", "train>report"}
	if !slices.Equal(edges, wantEdges) {
		t.Errorf("edges %v, want %v", edges, wantEdges)
	}
	// The legend names the statuses present.
	var legend []string
	for _, b := range findAll(find(t, doc, "div", byClass("legend")), "span", nil) {
		legend = append(legend, text(b))
	}
	if !slices.Equal(legend, []string{"HIT", "RAN", "FAILED", "SKIPPED"}) {
		t.Errorf("legend %v", legend)
	}
	// The stage table: reasons for skips, the failure's error escaped.
	train := find(t, doc, "tr", byAttr("id", "stage-train"))
	if got := text(find(t, train, "td", byClass("reason"))); got != "upstream features failed" {
		t.Errorf("train reason %q", got)
	}
	feat := find(t, doc, "tr", byAttr("id", "stage-features"))
	if got := text(find(t, feat, "pre", byClass("err"))); !strings.Contains(got, "boom: <bad> feature") {
		t.Errorf("features error %q", got)
	}
	if strings.Contains(body, "<bad>") || strings.Contains(body, "<script>") || !strings.Contains(body, "boom: &lt;bad&gt; feature") {
		t.Error("stage error not escaped")
	}
	if !strings.Contains(text(find(t, doc, "div", byClass("alert"))), `stage "features"`) {
		t.Error("run error missing")
	}
	if refreshes(doc) {
		t.Error("finished run refreshes")
	}

	// The all-HIT run.
	_, _, doc = get(t, h, "/runs/"+f.hit.ID)
	for _, n := range findAll(doc, "a", byClass("node")) {
		if attr(n, "data-status") != history.Hit {
			t.Errorf("run %s node %s: %s", f.hit.ID, attr(n, "data-stage"), attr(n, "data-status"))
		}
	}
	if got := text(find(t, doc, "p", byClass("sub"))); got != "6 hit" {
		t.Errorf("counts %q", got)
	}

	// A run of a pipeline no longer loaded: its stages, unconnected, and a
	// note saying why.
	f.src.files = []string{f.badFile}
	_, _, doc = get(t, h, path)
	if n, e := len(findAll(doc, "a", byClass("node"))), len(findAll(doc, "path", byClass("edge"))); n != 6 || e != 0 {
		t.Errorf("unloaded pipeline: %d nodes, %d edges", n, e)
	}
	if note := text(find(t, doc, "p", byClass("note"))); !strings.Contains(note, "nightly is not loaded") {
		t.Errorf("note %q", note)
	}
}

func TestLogPages(t *testing.T) {
	f := newFixture(t)
	h := New(f.src)
	id := f.failed.ID

	path := "/runs/" + id + "/stages/features/log"
	code, body, doc := get(t, h, path)
	wantCode(t, path, code, 200)
	raw, err := f.src.Log(id, "features")
	if err != nil {
		t.Fatal(err)
	}
	if got := text(find(t, doc, "pre", byAttr("id", "log"))); got != string(raw) || !strings.Contains(got, "<script>alert(1)</script>") {
		t.Errorf("log %q, want %q", got, raw)
	}
	if strings.Contains(body, "<script>") {
		t.Error("log not escaped")
	}

	// The raw log, byte for byte.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path+".txt", nil))
	if rec.Code != 200 || rec.Body.String() != string(raw) || rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("log.txt: %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
	}

	// A HIT's log is the log of the run that produced it.
	_, _, doc = get(t, h, "/runs/"+id+"/stages/extract/log")
	if got := text(find(t, doc, "pre", byAttr("id", "log"))); got != "extracted <b>rows</b>\n" {
		t.Errorf("hit log %q", got)
	}

	// Not found: each a 404 page that says what is missing.
	for path, msg := range map[string]string{
		"/runs/" + id + "/stages/train/log":       "This stage was skipped",
		"/runs/" + id + "/stages/nope/log":        `has no stage "nope" (its stages: extract, clean, features, stats, train, report)`,
		"/runs/" + id + "/stages/nope/log.txt":    `has no stage "nope"`,
		"/runs/" + id + "/stages/train/log.txt":   "no log captured",
		"/runs/20990101-no-such-run":              `no such run "20990101-no-such-run"`,
		"/runs/20990101-no-such-run/stages/a/log": "no such run",
		"/nowhere":               "There is no page at /nowhere.",
		"/runs/" + id + "/extra": "There is no page at",
	} {
		code, _, doc := get(t, h, path)
		wantCode(t, path, code, 404)
		if !strings.Contains(text(doc), msg) {
			t.Errorf("GET %s: page lacks %q:\n%s", path, msg, text(find(t, doc, "main", nil)))
		}
	}

	// A prefix of several run IDs is a 400 that says so; of one, the run.
	code, _, doc = get(t, h, "/runs/2")
	wantCode(t, "/runs/2", code, http.StatusBadRequest)
	if got := text(doc); !strings.Contains(got, "ambiguous run ID") || !strings.Contains(got, f.ran.ID) {
		t.Errorf("ambiguous prefix page: %q", text(find(t, doc, "main", nil)))
	}
	code, _, doc = get(t, h, "/runs/"+id[:len(id)-2])
	wantCode(t, "/runs/"+id[:len(id)-2], code, http.StatusOK)
	find(t, doc, "svg", byAttr("id", "dag"))

	// Only GET and HEAD.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/runs", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /runs: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("HEAD", "/runs/"+id, nil))
	if rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("HEAD: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	// The stylesheet is embedded.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/static/style.css", nil))
	if b, _ := io.ReadAll(rec.Body); rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/css") || !strings.Contains(string(b), ".node .bar") {
		t.Errorf("style.css: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
}

// TestLogTail: a large log shows its end, from a line start, with a link to
// the whole.
func TestLogTail(t *testing.T) {
	src := newEngineSource(t)
	file := src.write("big.yaml", "name: big\nstages:\n  loud:\n    outputs: {o: o.txt}\n    run: seq 1 100000; touch {{outputs.o}}\n")
	run := src.run(t.Context(), file, nil)
	path := "/runs/" + run.ID + "/stages/loud/log"
	code, _, doc := get(t, New(src), path)
	wantCode(t, path, code, 200)
	log := text(find(t, doc, "pre", byAttr("id", "log")))
	full, _ := src.Log(run.ID, "loud")
	if len(log) > logTail || !strings.HasSuffix(string(full), log) || !strings.HasSuffix(log, "\n99999\n100000\n") {
		t.Fatalf("tail: %d of %d bytes, ends %q", len(log), len(full), log[max(0, len(log)-20):])
	}
	if first, _, _ := strings.Cut(log, "\n"); !strings.Contains(string(full), "\n"+first+"\n") {
		t.Errorf("tail starts mid-line: %q", first)
	}
	note := text(find(t, doc, "p", byClass("note")))
	if !strings.Contains(note, "showing its end") || !strings.Contains(note, strconv.Itoa(len(full))+" bytes") {
		t.Errorf("note %q", note)
	}
}

// TestLiveRun: while a run is in progress the run page shows its stages
// live and refreshes itself; once it ends it stops.
func TestLiveRun(t *testing.T) {
	src := newEngineSource(t)
	id, finish := gatedRun(t.Context(), t, src)
	h := New(src)
	path := "/runs/" + id
	_, _, doc := get(t, h, path)
	if !refreshes(doc) {
		t.Error("running run does not refresh")
	}
	got := map[string]string{}
	for _, n := range findAll(doc, "a", byClass("node")) {
		got[attr(n, "data-stage")] = attr(n, "data-status")
	}
	if want := map[string]string{"first": history.Ran, "wait": history.Running, "after": Pending}; !maps.Equal(got, want) {
		t.Errorf("live statuses %v, want %v", got, want)
	}
	if b := find(t, find(t, doc, "h1", nil), "span", byClass("badge")); text(b) != "RUNNING" {
		t.Errorf("run badge %q", text(b))
	}
	_, _, doc = get(t, h, "/runs")
	if !refreshes(doc) {
		t.Error("run list with a running run does not refresh")
	}
	_, _, doc = get(t, h, "/")
	if !refreshes(doc) {
		t.Error("pipelines page with a running run does not refresh")
	}
	_, _, doc = get(t, h, path+"/stages/after/log")
	if !refreshes(doc) || !strings.Contains(text(doc), "has not started yet") {
		t.Error("pending stage's log page")
	}

	if r := finish(); r.Status != history.RunSucceeded {
		t.Fatalf("run %s: %s", r.Status, r.Error)
	}
	_, _, doc = get(t, h, path)
	if refreshes(doc) {
		t.Error("finished run still refreshes")
	}
}

// TestCancelledRun: a run cancelled while a stage runs shows that stage
// cancelled and the rest skipped.
func TestCancelledRun(t *testing.T) {
	src := newEngineSource(t)
	ctx, cancel := context.WithCancel(t.Context())
	id, finish := gatedRun(ctx, t, src)
	cancel()
	if r := finish(); r.Status != history.RunCancelled {
		t.Fatalf("run %s, want cancelled", r.Status)
	}
	code, _, doc := get(t, New(src), "/runs/"+id)
	wantCode(t, "/runs/"+id, code, 200)
	got := map[string]string{}
	for _, n := range findAll(doc, "a", byClass("node")) {
		got[attr(n, "data-stage")] = attr(n, "data-status")
	}
	if want := map[string]string{"first": history.Ran, "wait": history.Cancelled, "after": history.Skipped}; !maps.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if b := find(t, find(t, doc, "h1", nil), "span", byClass("badge")); text(b) != "CANCELLED" || !hasClass(b, "st-cancelled") {
		t.Errorf("run badge %q %q", text(b), attr(b, "class"))
	}
	if refreshes(doc) {
		t.Error("cancelled run refreshes")
	}
	_, _, doc = get(t, New(src), "/runs?status=cancelled")
	if rows := findAll(doc, "tr", byAttr("data-run", id)); len(rows) != 1 {
		t.Errorf("status filter cancelled: %d rows", len(rows))
	}
}
