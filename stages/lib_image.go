package stages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // registers GIF decoding with image.Decode
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path"
	"strings"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers WebP decoding with image.Decode
)

func init() {
	Register(Spec{
		Name: "image.resize",
		Doc: "Resizes images and emits them encoded as PNG or JPEG. A record is the image (PNG, JPEG, GIF, WebP), " +
			"the path of an image file, or a blob record from http.get emit: json, which stays a blob record named for its new format.",
		Options: []Option{
			{Name: "width", Type: Int, Default: 0, Doc: "the width in pixels; 0: from height, keeping the aspect ratio"},
			{Name: "height", Type: Int, Default: 0, Doc: "the height in pixels; 0: from width, keeping the aspect ratio"},
			{Name: "fit", Type: String, Default: "contain", Enum: []string{"contain", "cover", "fill"}, Doc: "with width and height: " +
				"contain fits the image inside them, cover fills them and crops the overflow around the centre, fill stretches"},
			{Name: "upscale", Type: Bool, Default: false, Doc: "let contain, or width or height alone, make an image larger than it is"},
			{Name: "format", Type: String, Default: "png", Enum: []string{"png", "jpeg"}, Doc: "the output encoding"},
			{Name: "quality", Type: Int, Default: 85, Doc: "the JPEG quality, 1 to 100"},
			{Name: "kernel", Type: String, Default: "catmullrom", Enum: []string{"catmullrom", "bilinear", "approx"}, Doc: "the resampling: " +
				"catmullrom is the sharpest, bilinear faster, approx (approximate bilinear) the fastest and roughest"},
			{Name: "max_pixels", Type: Int, Default: 50_000_000, Doc: "the most pixels a source image may have; " +
				"larger is an error before any decoding, which guards against decompression bombs. " +
				"A worker holds the record, the decoded source (4 bytes a pixel for a PNG, 1.5 for a JPEG; a PNG of 16 bits a channel takes 8 and counts as two pixels) and a copy of a quarter of its size"},
			{Name: "max_size", Type: Int, Default: 256 << 20, Doc: "the largest image file a path record may name, in bytes"},
		},
		Check: func(c Config) error { _, err := newImageResizeStage(c); return err },
		New:   func(c Config) (Stage, error) { return newImageResizeStage(c) },
	})
}

type imageResizeStage struct {
	width, height int
	fit           string
	upscale       bool
	jpeg          bool
	quality       int
	kernel        draw.Interpolator
	maxPixels     int
	maxSize       int64
	png           png.Encoder
}

func newImageResizeStage(c Config) (*imageResizeStage, error) {
	s := &imageResizeStage{
		width:     c.Int("width"),
		height:    c.Int("height"),
		fit:       c.String("fit"),
		upscale:   c.Bool("upscale"),
		jpeg:      c.String("format") == "jpeg",
		quality:   c.Int("quality"),
		maxPixels: c.Int("max_pixels"),
		maxSize:   int64(c.Int("max_size")),
	}
	switch {
	case s.width < 0:
		return nil, OptionErrorf("width", "must not be negative, not %d", s.width)
	case s.height < 0:
		return nil, OptionErrorf("height", "must not be negative, not %d", s.height)
	case s.width == 0 && s.height == 0:
		return nil, OptionErrorf("width", "image.resize needs width, height or both")
	case s.quality < 1 || s.quality > 100:
		return nil, OptionErrorf("quality", "must be from 1 to 100, not %d", s.quality)
	case s.maxPixels < 1:
		return nil, OptionErrorf("max_pixels", "must be at least 1, not %d", s.maxPixels)
	case s.maxSize < 1:
		return nil, OptionErrorf("max_size", "must be at least 1 byte, not %d", s.maxSize)
	case int64(max(s.width, 1))*int64(max(s.height, 1)) > int64(s.maxPixels):
		return nil, OptionErrorf("width", "%dx%d is more than max_pixels (%d): the output is held in memory too", s.width, s.height, s.maxPixels)
	}
	switch c.String("kernel") {
	case "catmullrom":
		s.kernel = draw.CatmullRom
	case "bilinear":
		s.kernel = draw.BiLinear
	default:
		s.kernel = draw.ApproxBiLinear
	}
	s.png.BufferPool = &imagePNGBuffers{}
	return s, nil
}

// imagePNGBuffers keeps one worker's PNG encoder buffers between records.
type imagePNGBuffers struct{ b *png.EncoderBuffer }

func (p *imagePNGBuffers) Get() *png.EncoderBuffer  { return p.b }
func (p *imagePNGBuffers) Put(b *png.EncoderBuffer) { p.b = b }

// imageFormat names the image format data starts with, or "".
func imageFormat(data []byte) string {
	switch ext := sniffExt(data, false); ext {
	case ".png", ".gif", ".webp":
		return ext[1:]
	case ".jpg":
		return "jpeg"
	}
	return ""
}

func (s *imageResizeStage) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	data, fields, err := s.source(rec)
	if err != nil {
		return out, err
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return out, Permanent(fmt.Errorf("decode image: %w", err))
	}
	if cfg.Width < 1 || cfg.Height < 1 {
		return out, Permanent(fmt.Errorf("%s image is %dx%d", format, cfg.Width, cfg.Height))
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > int64(s.maxPixels) {
		return out, Permanent(fmt.Errorf("%s image is %dx%d, %d pixels, more than max_pixels %d", format, cfg.Width, cfg.Height, px, s.maxPixels))
	} else if deep := cfg.ColorModel == color.RGBA64Model || cfg.ColorModel == color.NRGBA64Model; deep && 2*px > int64(s.maxPixels) {
		// 16 bits a channel decode to 8 bytes a pixel, twice the 4 that
		// max_pixels is documented to let a worker hold for a PNG.
		return out, Permanent(fmt.Errorf("%s image is %dx%d with 16 bits a channel, which decode to 8 bytes a pixel: it counts as %d pixels, more than max_pixels %d",
			format, cfg.Width, cfg.Height, 2*px, s.maxPixels))
	}
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return out, Permanent(fmt.Errorf("decode %s: %w", format, err))
	}
	dw, dh, crop := s.size(src.Bounds().Dx(), src.Bounds().Dy())
	if px := int64(dw) * int64(dh); px > int64(s.maxPixels) || dw < 1 || dh < 1 {
		// With one side given and upscale, the other follows the source.
		return out, Permanent(fmt.Errorf("the resized image would be %dx%d, more than max_pixels %d", dw, dh, s.maxPixels))
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	op := draw.Src
	if s.jpeg {
		// JPEG has no alpha: composite transparent sources over white
		// rather than letting them turn black.
		draw.Draw(dst, dst.Bounds(), image.White, image.Point{}, draw.Src)
		op = draw.Over
	}
	from := crop.Add(src.Bounds().Min)
	if s.kernel != draw.ApproxBiLinear && crop.Dx() >= 4*dw && crop.Dy() >= 4*dh {
		src = imageHalveTo(src, from, dw, dh)
		from = src.Bounds()
	}
	s.kernel.Scale(dst, dst.Bounds(), src, from, op, nil)

	var buf bytes.Buffer
	if s.jpeg {
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: s.quality})
	} else {
		err = s.png.Encode(&buf, dst)
	}
	if err != nil {
		return out, fmt.Errorf("encode: %w", err)
	}
	if fields == nil {
		return append(out, buf.Bytes()), nil
	}
	if name, ok := fields["name"].(string); ok && name != "" {
		fields["name"] = strings.TrimSuffix(name, path.Ext(name)) + s.ext()
	}
	fields["width"], fields["height"] = dw, dh
	fields["content_type"] = "image/png"
	if s.jpeg {
		fields["content_type"] = "image/jpeg"
	}
	blob, err := encodeBlob(fields, buf.Bytes())
	if err != nil {
		return out, Permanent(err)
	}
	return append(out, blob), nil
}

func (s *imageResizeStage) ext() string {
	if s.jpeg {
		return ".jpg"
	}
	return ".png"
}

// source returns the image bytes rec holds or names, and the fields of a
// blob record (nil for the others).
func (s *imageResizeStage) source(rec []byte) (data []byte, fields map[string]any, err error) {
	if imageFormat(rec) != "" {
		return rec, nil, nil
	}
	if isJSONObject(rec) {
		fields, data, isBlob, err := decodeBlob(rec)
		if err != nil {
			return nil, nil, err
		}
		if !isBlob {
			return nil, nil, Permanent(fmt.Errorf("JSON record has no %s field holding the image", blobData))
		}
		return data, fields, nil
	}
	name := string(bytes.TrimSpace(rec))
	if name == "" || len(name) > 4096 || strings.ContainsAny(name, "\x00\n") {
		return nil, nil, Permanent(errors.New("record is neither an image (PNG, JPEG, GIF, WebP) nor the path of an image file"))
	}
	f, err := openRegular(nil, name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, Permanent(fmt.Errorf("record is neither an image (PNG, JPEG, GIF, WebP) nor the path of a file: %w", err))
		}
		return nil, nil, err
	}
	defer f.Close()
	data, err = readAtMost(f, s.maxSize)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", name, fileErr(err))
	}
	return data, nil, nil
}

// size returns the output's width and height for a sw×sh source, and the
// part of the source to draw (all of it, unless cover crops).
func (s *imageResizeStage) size(sw, sh int) (dw, dh int, crop image.Rectangle) {
	crop = image.Rect(0, 0, sw, sh)
	fw, fh := float64(s.width)/float64(sw), float64(s.height)/float64(sh)
	var scale float64
	switch {
	case s.height == 0:
		scale = fw
	case s.width == 0:
		scale = fh
	case s.fit == "fill":
		return s.width, s.height, crop
	case s.fit == "cover":
		scale = math.Max(fw, fh)
		cw := min(sw, max(1, int(math.Round(float64(s.width)/scale))))
		ch := min(sh, max(1, int(math.Round(float64(s.height)/scale))))
		x, y := (sw-cw)/2, (sh-ch)/2
		return s.width, s.height, image.Rect(x, y, x+cw, y+ch)
	default:
		scale = math.Min(fw, fh)
	}
	if scale > 1 && !s.upscale {
		scale = 1
	}
	dw = max(1, int(math.Round(float64(sw)*scale)))
	dh = max(1, int(math.Round(float64(sh)*scale)))
	// Rounding must not push the side that was asked for past it.
	if s.width > 0 && scale <= fw {
		dw = min(dw, max(s.width, 1))
	}
	if s.height > 0 && scale <= fh {
		dh = min(dh, max(s.height, 1))
	}
	return dw, dh, crop
}

// imageHalveTo halves the part r of src, averaging 2×2 pixels, while it
// stays at least twice dw×dh. CatmullRom and BiLinear read a span of
// source that grows with the shrink factor: measured on a 1024×768 JPEG
// into 128×96 (BenchmarkStageImage), CatmullRom alone takes about 70 ms;
// after halving, the kernel has a factor of 2 to 4 left and the box
// averages keep the result free of aliasing. The first halving reads the
// source two rows at a time, never copying it whole: a copy of a 50
// megapixel source would be 200 MB more per worker.
func imageHalveTo(src image.Image, r image.Rectangle, dw, dh int) *image.RGBA {
	w, h := r.Dx()/2, r.Dy()/2
	strip := image.NewRGBA(image.Rect(0, 0, 2*w, 2))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		draw.Draw(strip, strip.Bounds(), src, image.Pt(r.Min.X, r.Min.Y+2*y), draw.Src)
		imageHalveRow(img.Pix[y*img.Stride:y*img.Stride+4*w], strip.Pix, strip.Pix[strip.Stride:])
	}
	for img.Rect.Dx() >= 4*dw && img.Rect.Dy() >= 4*dh {
		w, h := img.Rect.Dx()/2, img.Rect.Dy()/2
		half := image.NewRGBA(image.Rect(0, 0, w, h))
		for y := range h {
			imageHalveRow(half.Pix[y*half.Stride:y*half.Stride+4*w], img.Pix[2*y*img.Stride:], img.Pix[(2*y+1)*img.Stride:])
		}
		img = half
	}
	return img
}

// imageHalveRow averages the 2×2 pixels of the rows r0 and r1 into d.
func imageHalveRow(d, r0, r1 []uint8) {
	for i := range d {
		j := i + i&^3 // the same channel of source pixel 2x
		d[i] = uint8((uint16(r0[j]) + uint16(r0[j+4]) + uint16(r1[j]) + uint16(r1[j+4]) + 2) >> 2)
	}
}
