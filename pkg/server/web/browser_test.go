package web

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/server/web/browsertest"
)

// saveShot writes a screenshot to $ORCH_TEST_SCREENSHOTS/name when that is
// set (scripts and people use it to look at the page; docs/img has one).
func saveShot(t *testing.T, name string, png []byte) {
	if dir := os.Getenv("ORCH_TEST_SCREENSHOTS"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Error(err)
		}
	}
}

// TestBrowser loads the pages in a real headless Chromium over real runs:
// the stylesheet applies, links lead where they say, the DAG renders with
// each node painted in its status colour, logs show markup as text, and
// unknown runs get a 404 page.
func TestBrowser(t *testing.T) {
	b := browsertest.Start(t, browsertest.Options{})
	f := newFixture(t)
	srv := httptest.NewServer(New(f.src))
	defer srv.Close()

	// Pipelines: the stylesheet and the status colours apply.
	b.Navigate(srv.URL + "/")
	if title, _ := b.Title(); title != "Pipelines · orch" {
		t.Errorf("title %q", title)
	}
	card, _ := b.Find(`section[data-pipeline="nightly"]`)
	if txt, _ := card.Text(); !strings.Contains(txt, "0 2 * * *") || !strings.Contains(txt, "Nightly <features> & model") {
		t.Errorf("pipeline card text %q", txt)
	}
	badge, _ := b.Find(`section[data-pipeline="nightly"] .card-head .badge`)
	if bg, _ := badge.CSS("background-color"); bg != cssRGB(StatusColor(history.Failed)) {
		t.Errorf("failed badge background %q, want %q", bg, cssRGB(StatusColor(history.Failed)))
	}
	if ff, _ := b.Find("body"); ff != nil {
		if fam, _ := ff.CSS("font-family"); !strings.Contains(fam, "system-ui") {
			t.Errorf("body font %q: stylesheet not applied", fam)
		}
	}
	_, png, _ := b.Screenshot()
	saveShot(t, "pipelines.png", png)

	// Runs: all three, then filtered to failures; the run link leads to
	// its page.
	b.Navigate(srv.URL + "/runs")
	if rows, _ := b.FindAll("tr[data-run]"); len(rows) != 3 {
		t.Errorf("%d runs listed, want 3", len(rows))
	}
	_, png, _ = b.Screenshot()
	saveShot(t, "runs.png", png)
	b.Navigate(srv.URL + "/runs?status=failed")
	rows, _ := b.FindAll("tr[data-run]")
	if len(rows) != 1 {
		t.Fatalf("%d failed runs listed, want 1", len(rows))
	}
	link, _ := b.Find(`tr[data-run] a[href^="/runs/2"]`)
	link.Click()
	if u, _ := b.URL(); u != srv.URL+"/runs/"+f.failed.ID {
		t.Fatalf("run link led to %s", u)
	}
	_, png, _ = b.Screenshot()
	saveShot(t, "run.png", png)

	// The DAG: every node painted in its status colour, inside its own box.
	svg, _ := b.Find("svg#dag")
	img, png, _ := svg.Screenshot()
	saveShot(t, "dag.png", png)
	svgBox, _ := svg.Rect()
	if img.Bounds().Dx() < svgBox.Dx()-2 || img.Bounds().Dx() > svgBox.Dx()+2 {
		t.Fatalf("DAG screenshot %v for a box of %v: device scale factor is not 1", img.Bounds(), svgBox)
	}
	want := statusesOf(f.failed)
	nodes, _ := b.FindAll("svg#dag a.node")
	if len(nodes) != len(want) {
		t.Fatalf("%d nodes drawn, want %d", len(nodes), len(want))
	}
	for _, n := range nodes {
		name, _ := n.Attr("data-stage")
		box, _ := n.Rect()
		box = box.Sub(svgBox.Min).Add(img.Bounds().Min)
		st := want[name]
		// The status bar (9×58) and the pill are solid status colour.
		if got := browsertest.CountColor(img, box, browsertest.Hex(StatusColor(st)), 6); got < 300 {
			t.Errorf("node %s (%s): %d pixels of %s in %v, want ≥ 300", name, st, got, StatusColor(st), box)
		}
	}
	// Colours of statuses the run does not have are absent.
	for _, st := range []string{history.Running, history.Cancelled} {
		if got := browsertest.CountColor(img, img.Bounds(), browsertest.Hex(StatusColor(st)), 6); got > 0 {
			t.Errorf("%d pixels of %s (%s) in a DAG without such stages", got, StatusColor(st), st)
		}
	}
	// The graph has edges: pixels of the edge colour between the nodes.
	if got := browsertest.CountColor(img, img.Bounds(), browsertest.Hex("#8c959f"), 24); got < 100 {
		t.Errorf("%d edge pixels", got)
	}

	// Dark mode: a dark page, the same status colours.
	dark := browsertest.Start(t, browsertest.Options{Dark: true})
	dark.Navigate(srv.URL + "/runs/" + f.failed.ID)
	page, png, _ := dark.Screenshot()
	saveShot(t, "run-dark.png", png)
	if r, g, b, _ := page.At(page.Bounds().Max.X-8, page.Bounds().Max.Y-8).RGBA(); r>>8 > 40 || g>>8 > 40 || b>>8 > 40 {
		t.Errorf("dark mode background is rgb(%d, %d, %d)", r>>8, g>>8, b>>8)
	}
	dsvg, _ := dark.Find("svg#dag")
	dimg, _, _ := dsvg.Screenshot()
	for _, st := range []string{history.Hit, history.Ran, history.Failed, history.Skipped} {
		if got := browsertest.CountColor(dimg, dimg.Bounds(), browsertest.Hex(StatusColor(st)), 6); got < 300 {
			t.Errorf("dark mode: %d pixels of %s (%s)", got, StatusColor(st), st)
		}
	}

	// A node links to the stage's log, which shows markup as text.
	node, _ := b.Find(`svg#dag a.node[data-stage="features"]`)
	node.Click()
	if u, _ := b.URL(); !strings.HasSuffix(u, "/stages/features/log") {
		t.Fatalf("node link led to %s", u)
	}
	pre, _ := b.Find("pre#log")
	if txt, _ := pre.Text(); !strings.Contains(txt, "<script>alert(1)</script>") {
		t.Errorf("log text %q", txt)
	}
	_, png, _ = b.Screenshot()
	saveShot(t, "log.png", png)

	// Unknown run.
	b.Navigate(srv.URL + "/runs/no-such-run")
	h1, _ := b.Find("h1")
	if txt, _ := h1.Text(); txt != "Run not found" {
		t.Errorf("404 heading %q", txt)
	}
}

// TestBrowserLiveRefresh: a run page opened while the run is in progress
// follows it to the end without anyone reloading it.
func TestBrowserLiveRefresh(t *testing.T) {
	b := browsertest.Start(t, browsertest.Options{})
	src := newEngineSource(t)
	id, finish := gatedRun(t.Context(), t, src)
	srv := httptest.NewServer(New(src))
	defer srv.Close()
	b.Navigate(srv.URL + "/runs/" + id)
	if live, _ := b.FindAll(".live"); len(live) != 1 {
		t.Error("no live indicator on a running run")
	}
	r := finish()
	// The page reloads itself (every 2 s) until it shows the end.
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, err := b.FindAll(`svg#dag a.node[data-stage="after"][data-status="ran"]`)
		if err == nil && len(n) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page never showed run %s (%s) finished", r.ID, r.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if live, _ := b.FindAll(".live"); len(live) != 0 {
		t.Error("finished run still live")
	}
}

// cssRGB renders "#rrggbb" as WebDriver reports a computed CSS colour.
func cssRGB(hex string) string {
	c := browsertest.Hex(hex)
	return fmt.Sprintf("rgba(%d, %d, %d, 1)", c.R, c.G, c.B)
}
