package apps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/swarmgen/swarmgen/inference"
)

// FractalSchema lists the fractal app's params.
var FractalSchema = []Param{
	{Name: "width", Type: TypeInt, Default: int64(256), Min: i64(16), Max: i64(4096), Description: "image width in pixels"},
	{Name: "height", Type: TypeInt, Default: int64(256), Min: i64(16), Max: i64(4096), Description: "image height in pixels"},
	{Name: "iterations", Type: TypeInt, Default: int64(200), Min: i64(1), Max: i64(100000), Description: "escape-time iterations per pixel"},
	{Name: "prompt", Type: TypeString, Default: "", Max: i64(4096), Description: "free text hashed with the seed into the region choice"},
	{Name: "kind", Type: TypeString, Default: "mandelbrot", Enum: []string{"mandelbrot", "julia"}, Description: "which set to render"},
}

// FractalRegion is the part of the plane rendered, chosen from (seed,
// prompt).
type FractalRegion struct {
	CenterX float64 `json:"centerX"`
	CenterY float64 `json:"centerY"`
	Scale   float64 `json:"scale"` // half-width of the view
	CR      float64 `json:"cR,omitempty"`
	CI      float64 `json:"cI,omitempty"`
	Palette int     `json:"palette"`
}

// FractalSpec is a complete description of one image.
type FractalSpec struct {
	Kind       string        `json:"kind"`
	Width      int           `json:"width"`
	Height     int           `json:"height"`
	Iterations int           `json:"iterations"`
	Seed       int64         `json:"seed"`
	Prompt     string        `json:"prompt"`
	Region     FractalRegion `json:"region"`
}

// FractalMetadata is written to output/metadata.json. It holds no times so
// that the output is deterministic.
type FractalMetadata struct {
	App   string `json:"app"`
	Job   string `json:"job"`
	Task  string `json:"task"`
	Index int    `json:"index"`
	FractalSpec
}

// Fractal renders a Mandelbrot or Julia set (see FractalSchema) to
// output/fractal.png and output/metadata.json, reporting "::progress" per
// band of rows. Same (params, seed) → byte-identical files.
func Fractal(ctx context.Context, env inference.AppEnv) error {
	c, _, err := ReadContract(env.Params)
	if err != nil {
		return fmt.Errorf("fractal: %w", err)
	}
	spec, err := NewFractalSpec(c.Seed, c.App)
	if err != nil {
		return fmt.Errorf("fractal: %w", err)
	}
	var pngBuf bytes.Buffer
	if err := RenderFractal(ctx, spec, &pngBuf, env.Stdout); err != nil {
		return fmt.Errorf("fractal: %w", err)
	}
	if err := os.WriteFile(filepath.Join(env.Output, "fractal.png"), pngBuf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("fractal: write png: %w", err)
	}
	meta, err := json.MarshalIndent(FractalMetadata{App: "fractal", Job: c.Job, Task: c.Task, Index: c.Index, FractalSpec: spec}, "", "  ")
	if err != nil {
		return fmt.Errorf("fractal: encode metadata: %w", err)
	}
	if err := os.WriteFile(filepath.Join(env.Output, "metadata.json"), append(meta, '\n'), 0o644); err != nil {
		return fmt.Errorf("fractal: write metadata: %w", err)
	}
	return nil
}

// Interesting places; the region picks one by hash and jitters it.
var (
	mandelCenters = [][2]float64{
		{-0.743643887037151, 0.131825904205330},
		{-0.7453, 0.1127},
		{-1.25066, 0.02012},
		{-0.1011, 0.9563},
		{0.001643721971153, -0.822467633298876},
		{-1.768778833, -0.001738996},
		{-0.235125, 0.827215},
		{-0.75, 0.05},
	}
	mandelScales = []float64{1.6, 0.8, 0.4, 0.15, 0.05, 0.02, 0.008, 0.003}
	juliaCs      = [][2]float64{
		{-0.8, 0.156}, {-0.4, 0.6}, {0.285, 0.01}, {-0.70176, -0.3842},
		{-0.835, -0.2321}, {0.355, 0.355}, {-0.54, 0.54}, {-0.1, 0.651},
	}
	juliaScales = []float64{1.6, 1.2, 0.9, 0.6}
	// palettes are colour stops (RGB), cycled along the escape count.
	palettes = [][][3]uint8{
		{{0, 7, 100}, {32, 107, 203}, {237, 255, 255}, {255, 170, 0}, {0, 2, 0}},
		{{20, 0, 40}, {120, 20, 90}, {250, 120, 60}, {255, 240, 160}, {40, 10, 60}},
		{{0, 30, 20}, {10, 120, 90}, {200, 250, 200}, {90, 60, 30}, {0, 20, 10}},
		{{10, 10, 10}, {90, 90, 120}, {240, 240, 250}, {150, 40, 40}, {20, 0, 0}},
	}
)

// unit maps 8 hash bytes to [0,1) exactly (53 bits).
func unit(b []byte) float64 {
	return float64(binary.BigEndian.Uint64(b)>>11) / (1 << 53)
}

// NewFractalSpec validates the app params and derives the region from
// (seed, prompt) with SHA-256, so peers agree on it.
func NewFractalSpec(seed int64, raw json.RawMessage) (FractalSpec, error) {
	v, err := DecodeParams(FractalSchema, raw)
	if err != nil {
		return FractalSpec{}, err
	}
	s := FractalSpec{
		Kind:       v.String("kind"),
		Width:      int(v.Int("width")),
		Height:     int(v.Int("height")),
		Iterations: int(v.Int("iterations")),
		Seed:       seed,
		Prompt:     v.String("prompt"),
	}
	h := sha256.New()
	var sb [8]byte
	binary.BigEndian.PutUint64(sb[:], uint64(seed))
	h.Write(sb[:])
	h.Write([]byte(s.Kind))
	h.Write([]byte{0})
	h.Write([]byte(s.Prompt))
	d := h.Sum(nil)
	r := FractalRegion{Palette: int(d[0]) % len(palettes)}
	jx, jy := unit(d[8:16])-0.5, unit(d[16:24])-0.5
	if s.Kind == "julia" {
		c := juliaCs[int(d[1])%len(juliaCs)]
		r.CR = c[0] + float64(jx*0.02)
		r.CI = c[1] + float64(jy*0.02)
		r.Scale = juliaScales[int(d[2])%len(juliaScales)]
	} else {
		c := mandelCenters[int(d[1])%len(mandelCenters)]
		r.Scale = mandelScales[int(d[2])%len(mandelScales)]
		r.CenterX = c[0] + float64(jx*float64(r.Scale*0.2))
		r.CenterY = c[1] + float64(jy*float64(r.Scale*0.2))
	}
	s.Region = r
	return s, nil
}

// bandRows is how many rows a worker renders between progress reports.
const bandRows = 16

// RenderFractal renders spec as PNG to w, writing "::progress" lines to
// progress (may be nil) after each band of rows. Bands render in parallel;
// the result does not depend on the order. Arithmetic is plain IEEE
// add/sub/mul/div with explicit rounding (no fused multiply-add, no
// transcendental functions) so that every platform renders the same bytes.
func RenderFractal(ctx context.Context, spec FractalSpec, w io.Writer, progress io.Writer) error {
	img := image.NewNRGBA(image.Rect(0, 0, spec.Width, spec.Height))
	bands := (spec.Height + bandRows - 1) / bandRows
	next := make(chan int, bands)
	for b := 0; b < bands; b++ {
		next <- b
	}
	close(next)
	workers := min(runtime.GOMAXPROCS(0), bands)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		done     int
		firstErr error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range next {
				for y := b * bandRows; y < min((b+1)*bandRows, spec.Height); y++ {
					if err := ctx.Err(); err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
					renderRow(&spec, img, y)
				}
				mu.Lock()
				done++
				if progress != nil {
					fmt.Fprintf(progress, "::progress %.4f\n", float64(done)/float64(bands))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("render: %w", firstErr)
	}
	if err := (&png.Encoder{CompressionLevel: png.DefaultCompression}).Encode(w, img); err != nil {
		return fmt.Errorf("encode png: %w", err)
	}
	return nil
}

// renderRow fills row y of img.
func renderRow(s *FractalSpec, img *image.NRGBA, y int) {
	const bailout = 256.0
	r := s.Region
	halfW := r.Scale
	halfH := float64(r.Scale * float64(s.Height) / float64(s.Width))
	// Pixel centres map onto [center-half, center+half].
	py := float64((float64(y)+0.5)/float64(s.Height)*2 - 1)
	ci0 := r.CenterY - float64(py*halfH)
	pal := palettes[r.Palette]
	row := img.Pix[y*img.Stride : y*img.Stride+4*s.Width]
	for x := 0; x < s.Width; x++ {
		px := float64((float64(x)+0.5)/float64(s.Width)*2 - 1)
		cr0 := r.CenterX + float64(px*halfW)
		var zr, zi, cr, ci float64
		if s.Kind == "julia" {
			zr, zi, cr, ci = cr0, ci0, r.CR, r.CI
		} else {
			cr, ci = cr0, ci0
		}
		n := 0
		var mag float64
		if s.Kind != "julia" && inMainBulbs(cr, ci) {
			n = s.Iterations // never escapes: skip the loop
		}
		for ; n < s.Iterations; n++ {
			zr2 := float64(zr * zr)
			zi2 := float64(zi * zi)
			mag = zr2 + zi2
			if mag > bailout {
				break
			}
			zi = float64(2*float64(zr*zi)) + ci
			zr = zr2 - zi2 + cr
		}
		o := row[4*x : 4*x+4]
		o[3] = 255
		if n >= s.Iterations {
			o[0], o[1], o[2] = 0, 0, 0
			continue
		}
		// Smooth-ish colouring without logarithms: how far past the
		// bailout the orbit jumped gives the fraction between counts.
		frac := float64((mag - bailout) / mag)
		t := float64(float64(n)+1-frac) / 8 // colour stops every 8 iterations
		i := int(t)
		f := t - float64(i)
		a, b := pal[i%len(pal)], pal[(i+1)%len(pal)]
		for k := 0; k < 3; k++ {
			v := float64(a[k]) + float64(f*float64(float64(b[k])-float64(a[k])))
			o[k] = uint8(v + 0.5)
		}
	}
}

// inMainBulbs reports whether c lies in the main cardioid or the period-2
// bulb of the Mandelbrot set, whose points never escape; it saves the
// full iteration count for most interior pixels of wide views.
func inMainBulbs(cr, ci float64) bool {
	ci2 := float64(ci * ci)
	x := cr - 0.25
	q := float64(x*x) + ci2
	if float64(q*float64(q+x)) <= float64(0.25*ci2) {
		return true
	}
	x1 := cr + 1
	return float64(x1*x1)+ci2 <= 0.0625
}
