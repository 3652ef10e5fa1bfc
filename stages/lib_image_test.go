package stages_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/stages"
)

// imageLibEncode returns a w×h gradient image encoded as format.
func imageLibEncode(t testing.TB, format string, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "gif":
		err = gif.Encode(&buf, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// imageLibSize decodes data and returns its format and size.
func imageLibSize(t testing.TB, data []byte) (string, int, int) {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("output is no image: %v", err)
	}
	return format, img.Bounds().Dx(), img.Bounds().Dy()
}

func TestImageResize(t *testing.T) {
	wide := imageLibEncode(t, "png", 400, 200)
	cases := []struct {
		name         string
		with         map[string]any
		src          []byte
		format       string
		wantW, wantH int
	}{
		{"width only", map[string]any{"width": 100}, wide, "png", 100, 50},
		{"height only", map[string]any{"height": 20}, wide, "png", 40, 20},
		{"contain", map[string]any{"width": 100, "height": 100}, wide, "png", 100, 50},
		{"cover", map[string]any{"width": 100, "height": 100, "fit": "cover"}, wide, "png", 100, 100},
		{"fill", map[string]any{"width": 30, "height": 70, "fit": "fill"}, wide, "png", 30, 70},
		{"no upscale", map[string]any{"width": 800}, wide, "png", 400, 200},
		{"upscale", map[string]any{"width": 500, "upscale": true, "kernel": "approx"}, wide, "png", 500, 250},
		{"jpeg in, jpeg out", map[string]any{"width": 64, "format": "jpeg", "quality": 50}, imageLibEncode(t, "jpeg", 128, 96), "jpeg", 64, 48},
		{"gif in", map[string]any{"height": 10, "kernel": "approx"}, imageLibEncode(t, "gif", 30, 20), "png", 15, 10},
		{"tiny", map[string]any{"width": 10, "kernel": "bilinear"}, imageLibEncode(t, "png", 1000, 1), "png", 10, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := libbRun(libbStage(t, "image.resize", tc.with), string(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			format, w, h := imageLibSize(t, []byte(got[0]))
			if format != tc.format || w != tc.wantW || h != tc.wantH {
				t.Errorf("got %s %dx%d, want %s %dx%d", format, w, h, tc.format, tc.wantW, tc.wantH)
			}
		})
	}

	t.Run("colour kept through halving", func(t *testing.T) {
		img := image.NewNRGBA(image.Rect(0, 0, 600, 400))
		for i := 0; i < len(img.Pix); i += 4 {
			copy(img.Pix[i:], []byte{10, 200, 30, 255})
		}
		var buf bytes.Buffer
		png.Encode(&buf, img)
		got, err := libbRun(libbStage(t, "image.resize", map[string]any{"width": 50}), buf.String())
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := image.Decode(strings.NewReader(got[0]))
		if err != nil {
			t.Fatal(err)
		}
		if out.Bounds().Dx() != 50 || out.Bounds().Dy() != 33 {
			t.Fatalf("size %v, want 50x33", out.Bounds())
		}
		for _, p := range []image.Point{{0, 0}, {25, 16}, {49, 32}} {
			if c := color.NRGBAModel.Convert(out.At(p.X, p.Y)).(color.NRGBA); c != (color.NRGBA{10, 200, 30, 255}) {
				t.Errorf("pixel %v is %v", p, c)
			}
		}
	})

	t.Run("path", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "wide.png")
		if err := os.WriteFile(p, wide, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := libbRun(libbStage(t, "image.resize", map[string]any{"width": 40}), p+"\n")
		if err != nil {
			t.Fatal(err)
		}
		if _, w, h := imageLibSize(t, []byte(got[0])); w != 40 || h != 20 {
			t.Errorf("got %dx%d, want 40x20", w, h)
		}
	})

	t.Run("blob", func(t *testing.T) {
		rec := fmt.Sprintf(`{"name":"wide.jpg","url":"http://x/wide.jpg","data_base64":%q}`, base64.StdEncoding.EncodeToString(wide))
		got, err := libbRun(libbStage(t, "image.resize", map[string]any{"width": 40}), rec)
		if err != nil {
			t.Fatal(err)
		}
		var blob struct {
			Name, URL     string
			Width, Height int
			Data          []byte `json:"data_base64"`
		}
		if err := json.Unmarshal([]byte(got[0]), &blob); err != nil {
			t.Fatal(err)
		}
		_, w, h := imageLibSize(t, blob.Data)
		if blob.Name != "wide.png" || blob.URL != "http://x/wide.jpg" || blob.Width != 40 || blob.Height != 20 || w != 40 || h != 20 {
			t.Errorf("blob %+v holds a %dx%d image", blob, w, h)
		}
	})

	bad := []struct{ name, rec, wantErr string }{
		{"bomb", string(imageLibEncode(t, "png", 2000, 20)), "40000 pixels, more than max_pixels 39999"},
		{"corrupt", "\x89PNG\r\n\x1a\n\x00\x00garbage", "decode image"},
		{"truncated", string(imageLibEncode(t, "png", 100, 100)[:200]), "decode png"},
		{"no such file", "/no/such/image.png", "nor the path of a file"},
		{"text", "hello\nworld", "neither an image"},
		{"json without data", `{"name":"x"}`, "no data_base64"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			st := libbStage(t, "image.resize", map[string]any{"width": 10, "max_pixels": 39_999})
			_, err := libbRun(st, tc.rec)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, stages.ErrPermanent) {
				t.Fatalf("error %v, want a permanent one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestImageOptionErrors(t *testing.T) {
	cases := []struct {
		option string
		with   map[string]any
	}{
		{"width", map[string]any{}},
		{"width", map[string]any{"width": -1}},
		{"height", map[string]any{"width": 1, "height": -5}},
		{"quality", map[string]any{"width": 1, "quality": 0}},
		{"max_pixels", map[string]any{"width": 1, "max_pixels": 0}},
		{"format", map[string]any{"width": 1, "format": "bmp"}},
	}
	for _, tc := range cases {
		t.Run(tc.option, func(t *testing.T) {
			_, err := libbNewStage("image.resize", tc.with)
			var oe *stages.OptionError
			if !errors.As(err, &oe) || oe.Option != tc.option {
				t.Fatalf("error %v, want an *OptionError for %s", err, tc.option)
			}
		})
	}
}

// TestThumbnailsChain runs the thumbnails pipeline's stages in sequence,
// as the runner would: URLs -> http.get (emit: json) -> image.resize ->
// file.write, over images of several sizes and formats served on
// 127.0.0.1, and checks every thumbnail's name and size.
func TestThumbnailsChain(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })

	type source struct {
		file         string
		w, h         int
		wantW, wantH int // in a 64×64 box
	}
	sources := []source{
		{"wide.jpg", 640, 320, 64, 32},
		{"tall.png", 100, 400, 16, 64},
		{"square.gif", 200, 200, 64, 64},
		{"small.png", 32, 20, 32, 20}, // not upscaled
	}
	images := map[string][]byte{}
	for _, s := range sources {
		format := map[string]string{".jpg": "jpeg", ".png": "png", ".gif": "gif"}[filepath.Ext(s.file)]
		images["/photos/"+s.file] = imageLibEncode(t, format, s.w, s.h)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := images[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	fetch := libbStage(t, "http.get", map[string]any{"emit": "json"})
	resize := libbStage(t, "image.resize", map[string]any{"width": 64, "height": 64})
	write := libbStage(t, "file.write", map[string]any{"dir": dir})
	ctx := context.Background()
	for _, s := range sources {
		recs := [][]byte{[]byte(srv.URL + "/photos/" + s.file)}
		for _, st := range []stages.Stage{fetch, resize, write} {
			var err error
			if recs, err = st.Process(ctx, recs[0], nil); err != nil || len(recs) != 1 {
				t.Fatalf("%s: %d records, error %v", s.file, len(recs), err)
			}
		}
		want := filepath.Join(dir, strings.TrimSuffix(s.file, filepath.Ext(s.file))+".png")
		if string(recs[0]) != want {
			t.Errorf("%s: wrote %s, want %s", s.file, recs[0], want)
			continue
		}
		data, err := os.ReadFile(want)
		if err != nil {
			t.Fatal(err)
		}
		if format, w, h := imageLibSize(t, data); format != "png" || w != s.wantW || h != s.wantH {
			t.Errorf("%s: thumbnail is %s %dx%d, want png %dx%d", s.file, format, w, h, s.wantW, s.wantH)
		}
	}
	if _, err := fetch.Process(ctx, []byte(srv.URL+"/photos/missing.png"), nil); !errors.Is(err, stages.ErrPermanent) {
		t.Errorf("missing image: error %v, want a permanent 404", err)
	}
}

// BenchmarkStageImage measures image.resize on a 1024×768 JPEG into a
// 128-pixel box, the thumbnails workload.
func BenchmarkStageImage(b *testing.B) {
	src := imageLibEncode(b, "jpeg", 1024, 768)
	for _, kernel := range []string{"catmullrom", "bilinear", "approx"} {
		b.Run(kernel, func(b *testing.B) {
			st := libbStage(b, "image.resize", map[string]any{"width": 128, "height": 128, "kernel": kernel})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := st.Process(ctx, src, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// TestImageResize16BitPNG: a PNG of 16 bits a channel decodes to 8 bytes a
// pixel, twice what max_pixels is documented to let a worker hold for a
// PNG, so it counts double: a 7000×7000 one took 470 MB under the default
// max_pixels, documented as 200 MB.
func TestImageResize16BitPNG(t *testing.T) {
	img := image.NewNRGBA64(image.Rect(0, 0, 150, 150)) // 22500 pixels of 8 bytes
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	st := libbStage(t, "image.resize", map[string]any{"width": 10, "max_pixels": 39_999})
	_, err := libbRun(st, buf.String())
	if err == nil || !strings.Contains(err.Error(), "16 bits a channel") || !errors.Is(err, stages.ErrPermanent) {
		t.Fatalf("error %v, want a permanent one about 16 bits a channel", err)
	}
	// The same pixels of 8 bits a channel fit.
	if _, err := libbRun(st, string(imageLibEncode(t, "png", 150, 150))); err != nil {
		t.Fatal(err)
	}
}
