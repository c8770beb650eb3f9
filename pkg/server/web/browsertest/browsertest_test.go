package browsertest

import (
	"image"
	"image/color"
	"os"
	"strings"
	"testing"
)

func TestCountColor(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 10, 10))
	for x := 2; x < 5; x++ {
		for y := 0; y < 4; y++ {
			img.Set(x, y, color.RGBA{0x09, 0x69, 0xda, 0xff})
		}
	}
	img.Set(9, 9, color.RGBA{0x0c, 0x66, 0xdd, 0xff}) // within 3 of each channel
	c := Hex("#0969da")
	for _, tc := range []struct {
		r    image.Rectangle
		tol  int
		want int
	}{
		{img.Bounds(), 0, 12},
		{img.Bounds(), 3, 13},
		{image.Rect(3, 0, 100, 2), 0, 4}, // clipped to the image
		{image.Rect(5, 5, 9, 9), 10, 0},
	} {
		if got := CountColor(img, tc.r, c, tc.tol); got != tc.want {
			t.Errorf("CountColor(%v, tol %d) = %d, want %d", tc.r, tc.tol, got, tc.want)
		}
	}
}

func TestHex(t *testing.T) {
	if got := Hex("#cf222e"); got != (color.RGBA{0xcf, 0x22, 0x2e, 0xff}) {
		t.Errorf("Hex = %v", got)
	}
	for _, bad := range []string{"#fff", "red", "#12345g"} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(r.(string), bad) {
					t.Errorf("Hex(%q) did not panic naming it: %v", bad, r)
				}
			}()
			Hex(bad)
		}()
	}
}

func TestNewMissingDriver(t *testing.T) {
	_, err := New(t.Context(), Options{Driver: "/nonexistent/chromedriver"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/chromedriver") {
		t.Fatalf("err = %v", err)
	}
}

// TestErrors: a Browser from New reports WebDriver errors as values.
func TestErrors(t *testing.T) {
	drv := os.Getenv(EnvDriver)
	if drv == "" {
		t.Skipf("%s is not set", EnvDriver)
	}
	b, err := New(t.Context(), Options{Driver: drv, Chromium: os.Getenv(EnvChromium), Width: 400, Height: 300})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Quit()
	if err := b.Navigate("data:text/html,<title>t</title><p id=x style='color:red'>hello</p>"); err != nil {
		t.Fatal(err)
	}
	if title, err := b.Title(); title != "t" || err != nil {
		t.Errorf("title %q %v", title, err)
	}
	if _, err := b.Find("#missing"); !IsNoSuchElement(err) {
		t.Errorf("Find missing: %v", err)
	}
	if els, err := b.FindAll("#missing"); len(els) != 0 || err != nil {
		t.Errorf("FindAll missing: %d %v", len(els), err)
	}
	p, err := b.Find("#x")
	if err != nil {
		t.Fatal(err)
	}
	if txt, _ := p.Text(); txt != "hello" {
		t.Errorf("text %q", txt)
	}
	if id, _ := p.Attr("id"); id != "x" {
		t.Errorf("attr %q", id)
	}
	if v, _ := p.Attr("nope"); v != "" {
		t.Errorf("absent attr %q", v)
	}
	img, raw, err := b.Screenshot()
	if err != nil || len(raw) == 0 || img.Bounds().Dx() != 400 {
		t.Errorf("screenshot %v %d bytes: %v", img.Bounds(), len(raw), err)
	}
	if err := b.Quit(); err != nil {
		t.Error(err)
	}
	if err := b.Quit(); err != nil {
		t.Errorf("second Quit: %v", err)
	}
}
