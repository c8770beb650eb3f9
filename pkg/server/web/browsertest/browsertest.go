// Package browsertest drives a real headless Chromium from Go tests, through
// chromedriver and the W3C WebDriver HTTP protocol (net/http and
// encoding/json only).
//
// Words:
//   - Driver: the chromedriver process, started on a free loopback port.
//   - Browser: one WebDriver session, a headless Chromium the driver starts.
//   - Element: a DOM element found by a CSS selector.
//
// Use:
//
//	b := browsertest.Start(t, browsertest.Options{}) // skips unless ORCH_TEST_CHROMEDRIVER is set
//	b.Navigate(srv.URL + "/runs")
//	el := b.Find("svg#dag")
//	img := el.Screenshot()     // decoded PNG of just that element
//	n := browsertest.CountColor(img, img.Bounds(), browsertest.Hex("#0969da"), 8)
//
// scripts/browser.sh installs Debian's chromium and chromium-driver and
// prints the environment (ORCH_TEST_CHROMEDRIVER, ORCH_TEST_CHROMIUM).
package browsertest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Environment variables read by Start.
const (
	// EnvDriver is the chromedriver binary; tests skip when it is unset.
	EnvDriver = "ORCH_TEST_CHROMEDRIVER"
	// EnvChromium is the browser binary; default: chromium on PATH.
	EnvChromium = "ORCH_TEST_CHROMIUM"
)

// Options configure a Browser.
type Options struct {
	// Driver is the chromedriver binary.
	Driver string
	// Chromium is the browser binary; "" lets chromedriver find it.
	Chromium string
	// Width and Height are the viewport in CSS pixels (default 1280×900);
	// the device scale factor is 1, so a screenshot pixel is a CSS pixel.
	Width, Height int
	// Dark makes pages see prefers-color-scheme: dark (light otherwise).
	Dark bool
	// Log, if set, receives chromedriver's output.
	Log io.Writer
}

// Browser is one headless Chromium session behind its own chromedriver.
// In a Browser from Start every failed command ends the test, so callers may
// ignore the returned errors; a Browser from New returns them.
type Browser struct {
	t       testing.TB // nil for a Browser from New
	base    string     // http://127.0.0.1:PORT/session/ID
	driver  *exec.Cmd
	waited  chan struct{}
	client  *http.Client
	profile string
}

// Start starts a Browser for a test, skipping the test when EnvDriver is
// unset. opts.Driver and opts.Chromium default to the environment (EnvDriver,
// EnvChromium). Failed commands end the test; Quit runs at cleanup.
func Start(t testing.TB, opts Options) *Browser {
	t.Helper()
	if opts.Driver == "" {
		opts.Driver = os.Getenv(EnvDriver)
	}
	if opts.Driver == "" {
		t.Skipf("%s is not set (scripts/browser.sh installs chromium and chromedriver)", EnvDriver)
	}
	if opts.Chromium == "" {
		opts.Chromium = os.Getenv(EnvChromium)
	}
	b, err := New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	b.t = t
	t.Cleanup(func() {
		if err := b.Quit(); err != nil {
			t.Errorf("browsertest: quit: %v", err)
		}
	})
	return b
}

// New starts chromedriver on a free loopback port and opens a session with
// a headless Chromium. The caller must Quit it.
func New(ctx context.Context, opts Options) (*Browser, error) {
	if opts.Width == 0 {
		opts.Width, opts.Height = 1280, 900
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	profile, err := os.MkdirTemp("", "browsertest-profile-")
	if err != nil {
		return nil, err
	}
	b := &Browser{client: &http.Client{Timeout: 60 * time.Second}, profile: profile, waited: make(chan struct{})}
	b.driver = exec.Command(opts.Driver, "--port="+strconv.Itoa(port), "--allowed-ips=127.0.0.1")
	b.driver.Stdout, b.driver.Stderr = opts.Log, opts.Log
	if err := b.driver.Start(); err != nil {
		os.RemoveAll(profile)
		return nil, fmt.Errorf("browsertest: start %s: %w", opts.Driver, err)
	}
	go func() { _ = b.driver.Wait(); close(b.waited) }()
	root := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := b.waitReady(ctx, root); err != nil {
		b.stopDriver()
		return nil, err
	}

	args := []string{
		"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-default-apps",
		"--disable-sync", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
		"--metrics-recording-only", "--hide-scrollbars", "--force-device-scale-factor=1",
		fmt.Sprintf("--window-size=%d,%d", opts.Width, opts.Height), "--user-data-dir=" + profile,
	}
	chrome := map[string]any{"args": args}
	if opts.Chromium != "" {
		chrome["binary"] = opts.Chromium
	}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	body := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome", "goog:chromeOptions": chrome,
	}}}
	if err := b.do(http.MethodPost, root+"/session", body, &sess); err != nil {
		b.stopDriver()
		return nil, fmt.Errorf("browsertest: new session: %w", err)
	}
	b.base = root + "/session/" + sess.SessionID
	// The window size flag counts the (invisible) browser frame: set the
	// viewport itself, and the colour scheme, through DevTools.
	scheme := "light"
	if opts.Dark {
		scheme = "dark"
	}
	for _, c := range []map[string]any{
		{"cmd": "Emulation.setDeviceMetricsOverride", "params": map[string]any{
			"width": opts.Width, "height": opts.Height, "deviceScaleFactor": 1, "mobile": false}},
		{"cmd": "Emulation.setEmulatedMedia", "params": map[string]any{
			"features": []map[string]string{{"name": "prefers-color-scheme", "value": scheme}}}},
	} {
		if err := b.do(http.MethodPost, b.base+"/goog/cdp/execute", c, nil); err != nil {
			_ = b.Quit()
			return nil, fmt.Errorf("browsertest: %s: %w", c["cmd"], err)
		}
	}
	return b, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls the driver's /status until it is ready, it exits, or
// 30 seconds pass.
func (b *Browser) waitReady(ctx context.Context, root string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st struct {
			Ready bool `json:"ready"`
		}
		err := b.do(http.MethodGet, root+"/status", nil, &st)
		if err == nil && st.Ready {
			return nil
		}
		select {
		case <-b.waited:
			return fmt.Errorf("browsertest: chromedriver exited: %v", b.driver.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("browsertest: chromedriver not ready after 30s: %v", err)
		}
	}
}

// Error is an error reported by the WebDriver protocol.
type Error struct {
	Status  int
	Code    string // "no such element", "invalid session id", ...
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("webdriver: %s: %s", e.Code, e.Message) }

// IsNoSuchElement reports whether err is WebDriver's "no such element".
func IsNoSuchElement(err error) bool {
	var we *Error
	return errors.As(err, &we) && we.Code == "no such element"
}

// do sends one WebDriver command and decodes its "value" into out.
func (b *Browser) do(method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		j, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("webdriver %s %s: HTTP %d: %w", method, url, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		var we struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(env.Value, &we)
		msg, _, _ := strings.Cut(we.Message, "\n") // drop the stack trace
		return &Error{Status: resp.StatusCode, Code: we.Error, Message: msg}
	}
	if out != nil {
		return json.Unmarshal(env.Value, out)
	}
	return nil
}

// cmd runs a session command; in a Browser from Start an error ends the test.
func (b *Browser) cmd(method, path string, in, out any) error {
	err := b.do(method, b.base+path, in, out)
	if err != nil && b.t != nil {
		b.t.Helper()
		b.t.Fatalf("browsertest: %s %s: %v", method, path, err)
	}
	return err
}

// Navigate loads url and waits for the page to load.
func (b *Browser) Navigate(url string) error {
	return b.cmd(http.MethodPost, "/url", map[string]string{"url": url}, nil)
}

// URL returns the address of the current page.
func (b *Browser) URL() (string, error) {
	var s string
	err := b.cmd(http.MethodGet, "/url", nil, &s)
	return s, err
}

// Title returns the current page's title.
func (b *Browser) Title() (string, error) {
	var s string
	err := b.cmd(http.MethodGet, "/title", nil, &s)
	return s, err
}

// Source returns the current page's serialised DOM.
func (b *Browser) Source() (string, error) {
	var s string
	err := b.cmd(http.MethodGet, "/source", nil, &s)
	return s, err
}

// Element is a DOM element of the current page.
type Element struct {
	b  *Browser
	id string
}

// elementKey is the W3C name of an element reference.
const elementKey = "element-6066-11e4-a52e-4f735466cecf"

// Find returns the first element matching the CSS selector. In a Browser
// from Start a missing element ends the test; use FindAll to test absence.
func (b *Browser) Find(css string) (*Element, error) {
	var ref map[string]string
	if err := b.cmd(http.MethodPost, "/element", map[string]string{"using": "css selector", "value": css}, &ref); err != nil {
		return nil, err
	}
	return &Element{b: b, id: ref[elementKey]}, nil
}

// FindAll returns every element matching the CSS selector (none is no
// error).
func (b *Browser) FindAll(css string) ([]*Element, error) {
	var refs []map[string]string
	if err := b.cmd(http.MethodPost, "/elements", map[string]string{"using": "css selector", "value": css}, &refs); err != nil {
		return nil, err
	}
	out := make([]*Element, len(refs))
	for i, r := range refs {
		out[i] = &Element{b: b, id: r[elementKey]}
	}
	return out, nil
}

// Text returns the element's rendered text.
func (e *Element) Text() (string, error) {
	var s string
	err := e.b.cmd(http.MethodGet, "/element/"+e.id+"/text", nil, &s)
	return s, err
}

// Attr returns the element's attribute name ("" if absent).
func (e *Element) Attr(name string) (string, error) {
	var s *string
	err := e.b.cmd(http.MethodGet, "/element/"+e.id+"/attribute/"+name, nil, &s)
	if s == nil {
		return "", err
	}
	return *s, err
}

// CSS returns the computed value of a CSS property of the element.
func (e *Element) CSS(property string) (string, error) {
	var s string
	err := e.b.cmd(http.MethodGet, "/element/"+e.id+"/css/"+property, nil, &s)
	return s, err
}

// Rect returns the element's box in CSS pixels, relative to the document.
func (e *Element) Rect() (image.Rectangle, error) {
	var r struct{ X, Y, Width, Height float64 }
	if err := e.b.cmd(http.MethodGet, "/element/"+e.id+"/rect", nil, &r); err != nil {
		return image.Rectangle{}, err
	}
	return image.Rect(int(r.X), int(r.Y), int(r.X+r.Width), int(r.Y+r.Height)), nil
}

// Click clicks the element (following a link loads the page).
func (e *Element) Click() error {
	return e.b.cmd(http.MethodPost, "/element/"+e.id+"/click", map[string]any{}, nil)
}

// Screenshot returns a PNG of the viewport and its decoded image.
func (b *Browser) Screenshot() (image.Image, []byte, error) {
	return b.screenshot("/screenshot")
}

// Screenshot scrolls the element into view and returns a PNG of just its
// box, with its decoded image.
func (e *Element) Screenshot() (image.Image, []byte, error) {
	return e.b.screenshot("/element/" + e.id + "/screenshot")
}

func (b *Browser) screenshot(path string) (image.Image, []byte, error) {
	var s string
	if err := b.cmd(http.MethodGet, path, nil, &s); err != nil {
		return nil, nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, nil, fmt.Errorf("browsertest: screenshot: %w", err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("browsertest: screenshot: %w", err)
	}
	return img, raw, nil
}

// Quit ends the session (Chromium exits) and stops chromedriver. It is safe
// to call twice.
func (b *Browser) Quit() error {
	var err error
	if b.base != "" {
		err = b.do(http.MethodDelete, b.base, nil, nil)
		b.base = ""
	}
	b.stopDriver()
	return err
}

func (b *Browser) stopDriver() {
	if b.driver != nil && b.driver.Process != nil {
		_ = b.driver.Process.Signal(os.Interrupt)
		select {
		case <-b.waited:
		case <-time.After(5 * time.Second):
			_ = b.driver.Process.Kill()
			<-b.waited
		}
		b.driver = nil
	}
	if b.profile != "" {
		os.RemoveAll(b.profile)
		b.profile = ""
	}
}

// Hex parses "#rrggbb".
func Hex(s string) color.RGBA {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "#"), 16, 32)
	if err != nil || len(strings.TrimPrefix(s, "#")) != 6 {
		panic(fmt.Sprintf("browsertest.Hex(%q): want #rrggbb", s))
	}
	return color.RGBA{R: uint8(v >> 16), G: uint8(v >> 8), B: uint8(v), A: 255}
}

// CountColor counts the pixels of img inside r whose red, green and blue
// each differ from c's by at most tol (0–255).
func CountColor(img image.Image, r image.Rectangle, c color.Color, tol int) int {
	cr, cg, cb, _ := c.RGBA()
	n := 0
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if near(pr, cr, tol) && near(pg, cg, tol) && near(pb, cb, tol) {
				n++
			}
		}
	}
	return n
}

func near(a, b uint32, tol int) bool {
	d := int(a>>8) - int(b>>8)
	return d <= tol && d >= -tol
}
