package benchmark

// Rendering the report: the charts (SVG, drawn with gonum.org/v1/plot) and the
// docs/benchmarks.md page that shows them. Every figure carries Machine.Caption() in a
// line of its own at its foot; a section the report does not hold gets no figure, and
// the page says "not measured" for it instead of linking an image.

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/fileflow/fileflow/pkg/cost"
)

// ColdStartGoalMs is the target for a function's median init time, drawn as the
// goal line of the cold-start figure.
const ColdStartGoalMs = 30

// The figures' file names.
const (
	figEndToEnd    = "e2e.svg"
	figConcurrency = "concurrency.svg"
	figCost        = "cost.svg"
	figColdStart   = "coldstart.svg"
	figCPU         = "cpu.svg"
)

// figureNames are all the figures the report can have, in the page's order.
var figureNames = []string{figEndToEnd, figConcurrency, figCost, figColdStart, figCPU}

// Figure is one chart of the report.
type Figure struct {
	// Name is the file name, e.g. "e2e.svg".
	Name string
	// SVG is the image. The same report always gives the same bytes.
	SVG []byte
}

// Figures draws the report's charts, skipping those whose section the report does not
// hold: e2e.svg (section 1), concurrency.svg (2), cost.svg (3), coldstart.svg (5) and
// cpu.svg (where section 1's CPU went, for the first size profiled).
func Figures(r *Report) ([]Figure, error) {
	if r == nil {
		return nil, errors.New("benchmark: render figures: nil report")
	}
	var figs []Figure
	for _, name := range figureNames {
		if !hasFigure(r, name) {
			continue
		}
		b, err := drawFigure(r, name)
		if err != nil {
			return nil, fmt.Errorf("benchmark: render %s: %w", name, err)
		}
		figs = append(figs, Figure{Name: name, SVG: b})
	}
	return figs, nil
}

// drawFigure draws one figure; gonum panics on data it cannot draw, which is an error
// here.
func drawFigure(r *Report, name string) (b []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			b, err = nil, fmt.Errorf("draw: %v", p)
		}
	}()
	switch name {
	case figEndToEnd:
		return endToEndFigure(r)
	case figConcurrency:
		return concurrencyFigure(r)
	case figCost:
		return costFigure(r)
	case figColdStart:
		return coldStartFigure(r)
	case figCPU:
		return cpuFigure(r)
	}
	return nil, errors.New("unknown figure")
}

// hasFigure reports whether the report holds the section a figure draws.
func hasFigure(r *Report, name string) bool {
	switch name {
	case figEndToEnd:
		return len(r.EndToEnd) > 0
	case figConcurrency:
		return len(r.Concurrency) > 0
	case figCost:
		return r.Calls != nil && len(r.Calls.FileflowLines)+len(r.Calls.NaiveLines) > 0
	case figColdStart:
		return len(r.ColdStarts) > 0
	case figCPU:
		_, ok := firstCPU(r)
		return ok
	}
	return false
}

// firstCPU is the first size of section 1 with a CPU profile.
func firstCPU(r *Report) (SizeRun, bool) {
	for _, s := range r.EndToEnd {
		if hasCPU(s) {
			return s, true
		}
	}
	return SizeRun{}, false
}

func hasCPU(s SizeRun) bool {
	return s.CPU != nil && len(s.CPU.Pipeline)+len(s.CPU.Raw) > 0
}

// WriteDocs writes the report's figures into figDir (created if need be; figures of
// sections the report does not hold are removed, so no stale chart survives) and the
// page to mdPath, its image links relative to mdPath's directory.
func WriteDocs(r *Report, mdPath, figDir string) error {
	if r == nil {
		return errors.New("benchmark: write docs: nil report")
	}
	figs, err := Figures(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(figDir, 0o755); err != nil {
		return fmt.Errorf("benchmark: write docs: %w", err)
	}
	for _, f := range figs {
		if err := os.WriteFile(filepath.Join(figDir, f.Name), f.SVG, 0o644); err != nil {
			return fmt.Errorf("benchmark: write figure: %w", err)
		}
	}
	for _, name := range figureNames {
		if hasFigure(r, name) {
			continue
		}
		if err := os.Remove(filepath.Join(figDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("benchmark: remove stale figure: %w", err)
		}
	}
	link, err := relDir(filepath.Dir(mdPath), figDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(mdPath), 0o755); err != nil {
		return fmt.Errorf("benchmark: write docs: %w", err)
	}
	if err := os.WriteFile(mdPath, []byte(Markdown(r, link)), 0o644); err != nil {
		return fmt.Errorf("benchmark: write docs: %w", err)
	}
	return nil
}

// relDir is dir relative to base, with forward slashes as Markdown links want.
func relDir(base, dir string) (string, error) {
	absBase, err := filepath.Abs(base)
	if err != nil {
		return "", fmt.Errorf("benchmark: docs directory: %w", err)
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("benchmark: figure directory: %w", err)
	}
	rel, err := filepath.Rel(absBase, absDir)
	if err != nil {
		return "", fmt.Errorf("benchmark: link figures from %s: %w", base, err)
	}
	return filepath.ToSlash(rel), nil
}

// --- Figures ---

var (
	sansFont      = font.Font{Typeface: "Liberation", Variant: "Sans"}
	pipelineColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	rawColor      = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	goalColor     = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	captionColor  = color.Gray{Y: 0x55}
)

const (
	figWidth     = 8 * vg.Inch
	figHeight    = 4.5 * vg.Inch
	captionSpace = 16 // points kept at the foot for the caption line
)

// newPlot is a plot with the figures' sans-serif fonts.
func newPlot(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font = font.From(sansFont, 12)
	p.Title.Padding = vg.Points(6)
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = font.From(sansFont, 10)
		a.Tick.Label.Font = font.From(sansFont, 9)
	}
	p.Legend.TextStyle.Font = font.From(sansFont, 9)
	p.X.Tick.Marker = cleanTicks{plot.DefaultTicks{}}
	p.Y.Tick.Marker = cleanTicks{plot.DefaultTicks{}}
	return p
}

// cleanTicks relabels a Ticker's labels without trailing zeros ("750" for "750.00",
// as many decimals as the finest label needs) and with thousands grouped.
type cleanTicks struct{ plot.Ticker }

func (t cleanTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := t.Ticker.Ticks(lo, hi)
	prec := 0
	for _, tk := range ticks {
		if tk.Label == "" || strings.ContainsAny(tk.Label, "eE") {
			continue
		}
		if _, frac, ok := strings.Cut(tk.Label, "."); ok {
			prec = max(prec, len(strings.TrimRight(frac, "0")))
		}
	}
	for i, tk := range ticks {
		if tk.Label != "" && !strings.ContainsAny(tk.Label, "eE") {
			ticks[i].Label = fmtFloat(tk.Value, prec)
		}
	}
	return ticks
}

func textStyle(size vg.Length, c color.Color) draw.TextStyle {
	return draw.TextStyle{
		Color:   c,
		Font:    font.From(sansFont, size),
		Handler: plot.DefaultTextHandler,
	}
}

// renderFigure draws a figure of w×h on a white page, with the caption at its foot.
func renderFigure(w, h vg.Length, caption string, drawBody func(draw.Canvas) error) ([]byte, error) {
	c := vgsvg.New(w, h)
	dc := draw.New(c)
	dc.FillPolygon(color.White, []vg.Point{
		{X: dc.Min.X, Y: dc.Min.Y}, {X: dc.Max.X, Y: dc.Min.Y},
		{X: dc.Max.X, Y: dc.Max.Y}, {X: dc.Min.X, Y: dc.Max.Y},
	})
	dc.FillText(textStyle(8, captionColor), vg.Point{X: dc.Min.X + 6, Y: dc.Min.Y + 5}, caption)
	if err := drawBody(draw.Crop(dc, 0, 0, captionSpace, 0)); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("write svg: %w", err)
	}
	// The fonts are not embedded (that would add the font file to every figure): let a
	// viewer without Liberation Sans use its metric twin Arial, or a sans-serif.
	return bytes.ReplaceAll(buf.Bytes(), []byte("font-family:Liberation Sans;"), fontFallback), nil
}

var fontFallback = []byte("font-family:'Liberation Sans',Arial,Helvetica,sans-serif;")

// renderPlot draws one plot as a figure.
func renderPlot(p *plot.Plot, w, h vg.Length, caption string) ([]byte, error) {
	return renderFigure(w, h, caption, func(dc draw.Canvas) error {
		p.Draw(draw.Crop(dc, 0, -12, 0, 0))
		return nil
	})
}

func newBars(values []float64, width vg.Length, c color.Color) (*plotter.BarChart, error) {
	b, err := plotter.NewBarChart(plotter.Values(values), width)
	if err != nil {
		return nil, fmt.Errorf("bars: %w", err)
	}
	b.Color = c
	b.LineStyle.Width = 0
	return b, nil
}

// valueLabels writes each value's text just past the end of its bar.
func valueLabels(xys plotter.XYs, texts []string, horizontal bool) (*plotter.Labels, error) {
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: texts})
	if err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	for i := range l.TextStyle {
		l.TextStyle[i].Font = font.From(sansFont, 8)
		if horizontal {
			l.TextStyle[i].YAlign = draw.YCenter
		} else {
			l.TextStyle[i].XAlign = draw.XCenter
		}
	}
	if horizontal {
		l.Offset = vg.Point{X: 3}
	} else {
		l.Offset = vg.Point{Y: 3}
	}
	return l, nil
}

// endToEndFigure is section 1: one panel per file size (files/s differ by orders of
// magnitude between sizes), each with the pipeline's and the raw loop's bars.
func endToEndFigure(r *Report) ([]byte, error) {
	runs := r.EndToEnd
	plots := make([]*plot.Plot, len(runs))
	for i, s := range runs {
		p := newPlot(fmt.Sprintf("%s (%s×)", s.Label, fmtRatio(s.Ratio)))
		p.Title.TextStyle.Font = font.From(sansFont, 11)
		if i == 0 {
			p.Y.Label.Text = "files/s"
		}
		const width = vg.Length(36)
		pipe, err := newBars([]float64{s.Pipeline.FilesPerSec}, width, pipelineColor)
		if err != nil {
			return nil, err
		}
		rawBar, err := newBars([]float64{s.Raw.FilesPerSec}, width, rawColor)
		if err != nil {
			return nil, err
		}
		rawBar.XMin = 1
		labels, err := valueLabels(plotter.XYs{
			{X: 0, Y: s.Pipeline.FilesPerSec}, {X: 1, Y: s.Raw.FilesPerSec},
		}, []string{fmtRate(s.Pipeline.FilesPerSec), fmtRate(s.Raw.FilesPerSec)}, false)
		if err != nil {
			return nil, err
		}
		p.Add(pipe, rawBar, labels)
		p.NominalX("pipeline", "raw loop")
		p.Y.Min = 0
		p.Y.Max = headroom(p.Y.Max, 1.15)
		plots[i] = p
	}
	return renderFigure(figWidth, figHeight, r.Machine.Caption(), func(dc draw.Canvas) error {
		title := "End to end: files per second, pipeline vs raw loop (ratio in brackets)"
		sty := textStyle(12, color.Black)
		sty.XAlign = draw.XCenter
		sty.YAlign = draw.YTop
		dc.FillText(sty, vg.Point{X: (dc.Min.X + dc.Max.X) / 2, Y: dc.Max.Y - 4}, title)
		body := draw.Crop(dc, 0, 0, 0, -24)
		tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: 14, PadLeft: 4, PadRight: 8, PadBottom: 4}
		canvases := plot.Align([][]*plot.Plot{plots}, tiles, body)
		for i, p := range plots {
			p.Draw(canvases[0][i])
		}
		return nil
	})
}

// concurrencyFigure is section 2: files/s against the mapping's maximum concurrency.
func concurrencyFigure(r *Report) ([]byte, error) {
	runs := r.Concurrency
	p := newPlot("Throughput vs maximum concurrency")
	p.X.Label.Text = "maximum concurrency"
	p.Y.Label.Text = "files/s"
	pipe := make(plotter.XYs, len(runs))
	rawXYs := make(plotter.XYs, len(runs))
	ticks := make([]plot.Tick, len(runs))
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, c := range runs {
		x := float64(c.Concurrency)
		pipe[i] = plotter.XY{X: x, Y: c.Pipeline.FilesPerSec}
		rawXYs[i] = plotter.XY{X: x, Y: c.Raw.FilesPerSec}
		ticks[i] = plot.Tick{Value: x, Label: strconv.Itoa(c.Concurrency)}
		lo, hi = min(lo, x), max(hi, x)
	}
	for _, s := range []struct {
		name string
		xys  plotter.XYs
		c    color.Color
		g    draw.GlyphDrawer
	}{
		{"pipeline", pipe, pipelineColor, draw.CircleGlyph{}},
		{"raw loop (concurrency × 8 files in flight)", rawXYs, rawColor, draw.SquareGlyph{}},
	} {
		l, pts, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			return nil, fmt.Errorf("lines: %w", err)
		}
		l.Color = s.c
		l.Width = vg.Points(1.5)
		pts.Color = s.c
		pts.Shape = s.g
		pts.Radius = vg.Points(3)
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	if lo > 0 && hi > lo { // a log scale needs a range of positive values
		p.X.Scale = plot.LogScale{}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Add(plotter.NewGrid())
	p.Y.Min = 0
	p.Y.Max = headroom(p.Y.Max, 1.2)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)
	return renderPlot(p, figWidth, figHeight, r.Machine.Caption())
}

// costFigure is section 3: dollars per million files by service, both designs.
func costFigure(r *Report) ([]byte, error) {
	c := r.Calls
	services, ff, naive := costRows(c)
	// Horizontal bars, the first service at the top.
	n := len(services)
	names := make([]string, n)
	ffv := make([]float64, n)
	nv := make([]float64, n)
	for i := range services {
		j := n - 1 - i
		names[j], ffv[j], nv[j] = services[i], ff[i], naive[i]
	}
	title := fmt.Sprintf("Dollars per million files by service: fileflow %s, naive design %s",
		cost.FormatUSD(c.FileflowUSDPerMillion), cost.FormatUSD(c.NaiveUSDPerMillion))
	p := newPlot(title)
	p.X.Label.Text = "USD per million files"
	h := max(figHeight, vg.Length(110+32*n))
	width := barWidth(h, n)
	ffText := make([]string, n)
	nText := make([]string, n)
	for i := range names {
		ffText[i], nText[i] = cost.FormatUSD(ffv[i]), cost.FormatUSD(nv[i])
	}
	if err := addGroupedHBars(p, names, ffv, nv, ffText, nText, width, "fileflow", "naive design"); err != nil {
		return nil, err
	}
	return renderPlot(p, figWidth, h, r.Machine.Caption())
}

// costRows lines up the two designs' lines by service: fileflow's order, then the
// naive design's services fileflow does not have.
func costRows(c *CallsSection) (services []string, ff, naive []float64) {
	idx := map[string]int{}
	add := func(service string) int {
		i, ok := idx[service]
		if !ok {
			i = len(services)
			idx[service] = i
			services = append(services, service)
			ff = append(ff, 0)
			naive = append(naive, 0)
		}
		return i
	}
	for _, l := range c.FileflowLines {
		ff[add(l.Service)] += l.USD
	}
	for _, l := range c.NaiveLines {
		naive[add(l.Service)] += l.USD
	}
	return services, ff, naive
}

// addGroupedHBars adds two horizontal bar series, one pair per name, with their texts
// (the values; "" for none) written past the bars, and a legend.
func addGroupedHBars(p *plot.Plot, names []string, a, b []float64, aText, bText []string,
	width vg.Length, aName, bName string) error {
	ab, err := newBars(a, width, pipelineColor)
	if err != nil {
		return err
	}
	ab.Horizontal = true
	ab.Offset = width / 2
	bb, err := newBars(b, width, rawColor)
	if err != nil {
		return err
	}
	bb.Horizontal = true
	bb.Offset = -width / 2
	p.Add(plotter.NewGrid(), ab, bb)
	for _, s := range []struct {
		vs    []float64
		texts []string
		offs  vg.Length
	}{{a, aText, width / 2}, {b, bText, -width / 2}} {
		xys := make(plotter.XYs, len(s.vs))
		for i, v := range s.vs {
			xys[i] = plotter.XY{X: v, Y: float64(i)}
		}
		l, err := valueLabels(xys, s.texts, true)
		if err != nil {
			return err
		}
		l.Offset.Y = s.offs
		p.Add(l)
	}
	p.Legend.Add(aName, ab)
	p.Legend.Add(bName, bb)
	p.Legend.Top = false
	p.NominalY(names...)
	p.X.Min = 0
	p.X.Max = headroom(p.X.Max, 1.3)
	return nil
}

// barWidth fits two bars a group in a figure h high with n groups.
func barWidth(h vg.Length, n int) vg.Length {
	w := (h - 90) / vg.Length(n) / 2.6
	return min(max(w, 4), 14)
}

// coldStartFigure is section 5: each function's median init time, with the goal line.
func coldStartFigure(r *Report) ([]byte, error) {
	cs := r.ColdStarts
	p := newPlot(fmt.Sprintf("Cold start: median init time per function (goal ≤ %d ms)", ColdStartGoalMs))
	p.Y.Label.Text = "init ms (median)"
	medians := make([]float64, len(cs))
	names := make([]string, len(cs))
	xys := make(plotter.XYs, len(cs))
	texts := make([]string, len(cs))
	for i, c := range cs {
		medians[i] = c.MedianMs
		names[i] = fmt.Sprintf("%s\n%s MB zip", c.Function, fmtFloat(zipMB(c.ZipBytes), 1))
		xys[i] = plotter.XY{X: float64(i), Y: c.MedianMs}
		texts[i] = fmtFloat(c.MedianMs, 1) + " ms"
	}
	width := min(vg.Length(40), (figWidth-120)/vg.Length(len(cs))/1.6)
	b, err := newBars(medians, width, pipelineColor)
	if err != nil {
		return nil, err
	}
	goal, err := plotter.NewLine(plotter.XYs{
		{X: -0.5, Y: ColdStartGoalMs}, {X: float64(len(cs)) - 0.5, Y: ColdStartGoalMs},
	})
	if err != nil {
		return nil, fmt.Errorf("goal line: %w", err)
	}
	goal.Color = goalColor
	goal.Width = vg.Points(1.5)
	goal.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
	labels, err := valueLabels(xys, texts, false)
	if err != nil {
		return nil, err
	}
	p.Add(b, goal, labels)
	p.Legend.Add(fmt.Sprintf("goal: %d ms", ColdStartGoalMs), goal)
	p.Legend.Top = true
	p.NominalX(names...)
	p.Y.Min = 0
	p.Y.Max = headroom(p.Y.Max, 1.2)
	return renderPlot(p, figWidth, figHeight, r.Machine.Caption())
}

func zipMB(b int64) float64 { return float64(b) / 1e6 }

// cpuFigure is where the CPU went during section 1's first profiled size: CPU ms per
// file by process group, pipeline vs raw loop.
func cpuFigure(r *Report) ([]byte, error) {
	s, _ := firstCPU(r)
	rows := cpuRows(s.CPU)
	n := len(rows)
	names := make([]string, n)
	pipe := make([]float64, n)
	rawMs := make([]float64, n)
	pipeText := make([]string, n) // "" where the group did not run in that loop
	rawText := make([]string, n)
	for i, row := range rows {
		j := n - 1 - i
		names[j] = row.name
		if row.pipeline != nil {
			pipe[j] = row.pipeline.PerFileMs
			pipeText[j] = fmtFloat(pipe[j], 2)
		}
		if row.raw != nil {
			rawMs[j] = row.raw.PerFileMs
			rawText[j] = fmtFloat(rawMs[j], 2)
		}
	}
	p := newPlot(fmt.Sprintf("Where the CPU went, %s files: CPU ms per file by process group", s.Label))
	p.X.Label.Text = "CPU ms per file"
	h := max(figHeight, vg.Length(110+32*n))
	if err := addGroupedHBars(p, names, pipe, rawMs, pipeText, rawText, barWidth(h, n), "pipeline", "raw loop"); err != nil {
		return nil, err
	}
	return renderPlot(p, figWidth, h, r.Machine.Caption())
}

// cpuRow is one process group in both loops (nil: absent from that loop).
type cpuRow struct {
	name          string
	pipeline, raw *ProcessCPU
}

// cpuRows lines up the loops' process groups: the pipeline's order, then the raw loop's
// others.
func cpuRows(p *CPUProfile) []cpuRow {
	var rows []cpuRow
	idx := map[string]int{}
	row := func(name string) *cpuRow {
		i, ok := idx[name]
		if !ok {
			i = len(rows)
			idx[name] = i
			rows = append(rows, cpuRow{name: name})
		}
		return &rows[i]
	}
	for i := range p.Pipeline {
		row(p.Pipeline[i].Name).pipeline = &p.Pipeline[i]
	}
	for i := range p.Raw {
		row(p.Raw[i].Name).raw = &p.Raw[i]
	}
	return rows
}

// headroom raises an axis maximum to leave room for labels and the legend.
func headroom(v, factor float64) float64 {
	if v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 1
	}
	return v * factor
}

// --- Markdown ---

// Markdown is docs/benchmarks.md for the report: what `make bench` is, the machine, the
// goals and one section per part of the report, its image links under figDir (a path
// relative to the page's directory). A section the report does not hold says "not
// measured". A nil report gives "".
func Markdown(r *Report, figDir string) string {
	if r == nil {
		return ""
	}
	m := &mdWriter{r: r, figDir: filepath.ToSlash(figDir)}
	m.header()
	m.goals()
	m.endToEnd()
	m.concurrency()
	m.calls()
	m.overhead()
	m.coldStarts()
	m.fanOut()
	return m.b.String()
}

type mdWriter struct {
	b      strings.Builder
	r      *Report
	figDir string
}

func (m *mdWriter) p(format string, args ...any) {
	fmt.Fprintf(&m.b, format, args...)
	m.b.WriteString("\n")
}

// table writes a Markdown table; align holds one of "l", "r", "c" per column.
func (m *mdWriter) table(header []string, align string, rows [][]string) {
	m.p("| %s |", strings.Join(cells(header), " | "))
	seps := make([]string, len(header))
	for i := range seps {
		switch {
		case i < len(align) && align[i] == 'r':
			seps[i] = "---:"
		case i < len(align) && align[i] == 'c':
			seps[i] = ":---:"
		default:
			seps[i] = "---"
		}
	}
	m.p("| %s |", strings.Join(seps, " | "))
	for _, row := range rows {
		m.p("| %s |", strings.Join(cells(row), " | "))
	}
	m.p("")
}

// cells escapes table cells.
func cells(cs []string) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		c = strings.ReplaceAll(c, "|", `\|`)
		out[i] = strings.Join(strings.Fields(c), " ")
	}
	return out
}

func (m *mdWriter) image(name, alt string) {
	m.p("![%s](%s)", alt, path.Join(m.figDir, name))
	m.p("")
}

func (m *mdWriter) notMeasured() {
	m.p("_not measured in this run_")
	m.p("")
}

func (m *mdWriter) header() {
	r := m.r
	m.p("# Benchmarks")
	m.p("")
	m.p("This page is written by `make bench` (`fileflow bench report`), which measures fileflow " +
		"on the local stack — the pipeline end to end against a raw loop, throughput as the " +
		"worker mapping's concurrency grows, API calls per file priced by the cost model, the " +
		"worker's own overhead, cold starts and fan-out scale — and writes the figures to " +
		"`bench/report.json` and the charts next to this page. Do not edit it by hand: run " +
		"`make bench` again.")
	m.p("")
	m.p("Where the pipeline's time goes and what was changed for it: [performance.md](performance.md). " +
		"Earlier one-off measurements (API calls per file of jobs, large-file memory, jobs on the " +
		"local stack): [measurements.md](measurements.md).")
	m.p("")
	mc := r.Machine
	var parts []string
	if mc.Cores > 0 {
		parts = append(parts, fmt.Sprintf("%d cores", mc.Cores))
	}
	if mc.CPU != "" {
		parts = append(parts, mc.CPU)
	}
	if mc.MemoryGiB > 0 {
		parts = append(parts, fmt.Sprintf("%d GiB", mc.MemoryGiB))
	}
	if mc.OS != "" || mc.Arch != "" {
		parts = append(parts, strings.Trim(mc.OS+"/"+mc.Arch, "/"))
	}
	if mc.GoVersion != "" {
		parts = append(parts, mc.GoVersion)
	}
	line := "**Machine:** " + strings.Join(parts, ", ") + "."
	if mc.Date != "" {
		line += " **Measured** on " + mc.Date
		if mc.Commit != "" {
			line += " at commit `" + mc.Commit + "`"
			if mc.Dirty {
				line += " with uncommitted changes"
			}
		}
		line += "."
	}
	if r.Seconds > 0 {
		line += " The whole run took " + fmtDuration(r.Seconds) + "."
	}
	m.p("%s", line)
	m.p("")
	m.p("Every chart carries the line _%s_.", mc.Caption())
	m.p("")
}

func (m *mdWriter) goals() {
	m.p("## Goals")
	m.p("")
	if len(m.r.Goals) == 0 {
		m.p("_no goals recorded in this run_")
		m.p("")
		return
	}
	var rows [][]string
	var missed []string
	for _, g := range m.r.Goals {
		met := "✓"
		if !g.Met {
			met = "✗ missed"
			missed = append(missed, g.What)
		}
		rows = append(rows, []string{g.What, g.Target, g.Measured, met})
	}
	m.table([]string{"goal", "target", "measured", "met"}, "lllc", rows)
	met := len(m.r.Goals) - len(missed)
	if len(missed) == 0 {
		m.p("All %d goals met.", len(m.r.Goals))
	} else {
		m.p("%d of %d goals met. **Missed:** %s.", met, len(m.r.Goals), strings.Join(missed, "; "))
	}
	m.p("")
}

func (m *mdWriter) endToEnd() {
	m.p("## 1. End to end: the pipeline against the raw loop")
	m.p("")
	runs := m.r.EndToEnd
	if len(runs) == 0 {
		m.notMeasured()
		return
	}
	m.p("For each file size the pipeline drains a backlog — real worker binaries, real queue, " +
		"real ledger — and the raw loop does the same GET, PUT and ledger commit per file with " +
		"no queue, runtime or processors, on the same servers. The ratio is the pipeline's " +
		"files/s over the raw loop's.")
	m.p("")
	m.p("The order of a run: one stack for the three sizes; a warm-up of %d raw passes over %d small files, each "+
		"pass writing new records (DynamoDB Local's JVM keeps compiling for tens of thousands of "+
		"requests); then for each size the raw loop over files like the pipeline's, the pipeline's drain, and the raw "+
		"loop over the pipeline's files, with the mappings paused between sizes until every environment has stopped (each drain starts cold). The raw loop's figure is the mean of its two runs, "+
		"before and after, so that the servers' drift favours neither loop. The raw loop runs "+
		"in the benchmark's own process, so the pipeline's files are generated only after its "+
		"first run (2 GB of 20 MB files in that process's heap halved the loop's files/s), and "+
		"the page cache is written back (sync) before each timed loop, so that no loop pays for "+
		"flushing another's writes.", WarmUpPasses, WarmUpFiles)
	m.p("")
	var rows [][]string
	for _, s := range runs {
		rows = append(rows, []string{
			s.Label,
			fmtFiles(s.Pipeline.Files, s.Raw.Files),
			fmtRate(s.Pipeline.FilesPerSec),
			fmtRate(s.Raw.FilesPerSec),
			fmtRate(s.RawBefore.FilesPerSec) + " / " + fmtRate(s.RawAfter.FilesPerSec),
			fmtRatio(s.Ratio),
			fmtRate(s.Pipeline.MBPerSec),
			fmtRate(s.Raw.MBPerSec),
			fmtFloat(s.Pipeline.P50ms, 1) + " / " + fmtFloat(s.Pipeline.P99ms, 1),
			fmtFloat(s.Raw.P50ms, 1) + " / " + fmtFloat(s.Raw.P99ms, 1),
			fmtInt(s.Pipeline.Lost),
		})
	}
	m.table([]string{"size", "files", "pipeline files/s", "raw loop files/s", "raw before / after", "ratio",
		"pipeline MB/s", "raw MB/s", "pipeline p50 / p99 ms", "raw p50 / p99 ms", "lost"},
		"lrrrrrrrrrr", rows)
	for _, s := range runs {
		if len(s.WarmUp) > 0 {
			m.p("Warm-up passes before the %s run, raw loop files/s: %s.", s.Label, fmtRates(s.WarmUp))
			m.p("")
		}
	}
	m.p("Per-file times: for the pipeline, the worker's start of the file to its commit; for " +
		"the raw loop, its GET, PUT and write. Lost files are the pipeline's files without a " +
		"final record at the end (must be 0).")
	m.p("")
	m.image(figEndToEnd, "files per second by file size, pipeline vs raw loop")

	m.p("### Where the CPU went")
	m.p("")
	profiled := false
	for _, s := range runs {
		if !hasCPU(s) {
			continue
		}
		profiled = true
		m.cpuTable(s)
	}
	if !profiled {
		m.notMeasured()
		return
	}
	first, _ := firstCPU(m.r)
	m.image(figCPU, "CPU ms per file by process group, "+first.Label+" files, pipeline vs raw loop")
}

func (m *mdWriter) cpuTable(s SizeRun) {
	m.p("**%s files.** Each process group's CPU seconds (user + system) during the loop, its "+
		"share of the machine's capacity (CPU seconds / (wall time × cores)) and CPU "+
		"milliseconds per file.", s.Label)
	m.p("")
	var rows [][]string
	var tp, tr ProcessCPU // the busy groups' sums
	idle := false
	for _, row := range cpuRows(s.CPU) {
		cs := []string{row.name}
		idle = idle || row.name == GroupIdle
		for _, pc := range []struct {
			p   *ProcessCPU
			sum *ProcessCPU
		}{{row.pipeline, &tp}, {row.raw, &tr}} {
			if pc.p == nil {
				cs = append(cs, "—", "—", "—")
				continue
			}
			if row.name != GroupIdle {
				pc.sum.CPUSeconds += pc.p.CPUSeconds
				pc.sum.Share += pc.p.Share
				pc.sum.PerFileMs += pc.p.PerFileMs
			}
			cs = append(cs, fmtFloat(pc.p.CPUSeconds, 2), fmtPercent(pc.p.Share), fmtFloat(pc.p.PerFileMs, 2))
		}
		rows = append(rows, cs)
	}
	total := "**total**"
	if idle {
		total = "**total, idle excluded**"
	}
	rows = append(rows, []string{total,
		fmtFloat(tp.CPUSeconds, 2), fmtPercent(tp.Share), fmtFloat(tp.PerFileMs, 2),
		fmtFloat(tr.CPUSeconds, 2), fmtPercent(tr.Share), fmtFloat(tr.PerFileMs, 2)})
	m.table([]string{"process group", "pipeline CPU s", "pipeline share", "pipeline CPU ms/file",
		"raw CPU s", "raw share", "raw CPU ms/file"}, "lrrrrrr", rows)
}

func (m *mdWriter) concurrency() {
	m.p("## 2. Throughput as the maximum concurrency grows")
	m.p("")
	runs := m.r.Concurrency
	if len(runs) == 0 {
		m.notMeasured()
		return
	}
	m.p("The worker mapping's maximum concurrency against files/s; next to each, the raw loop " +
		"with as many files in flight as the pipeline can have (concurrency × the files one environment works on at once, the worker's default 8), run before and after the pipeline as in section 1: its figure is the mean. " +
		"The levels share one stack and one warm-up: before each, the mappings are paused until every environment has stopped (each level starts cold) and the maximum concurrency is set on the running mapping, as UpdateEventSourceMapping does on AWS.")
	m.p("")
	var rows [][]string
	for _, c := range runs {
		ratio := "—"
		if c.Raw.FilesPerSec > 0 {
			ratio = fmtRatio(c.Pipeline.FilesPerSec / c.Raw.FilesPerSec)
		}
		rows = append(rows, []string{
			strconv.Itoa(c.Concurrency),
			fmtRate(c.Pipeline.FilesPerSec),
			fmtFloat(c.Pipeline.P50ms, 1) + " / " + fmtFloat(c.Pipeline.P99ms, 1),
			fmtInt(c.RawFiles),
			fmtRate(c.Raw.FilesPerSec),
			fmtRate(c.RawBefore.FilesPerSec) + " / " + fmtRate(c.RawAfter.FilesPerSec),
			ratio,
		})
	}
	m.table([]string{"max concurrency", "pipeline files/s", "pipeline p50 / p99 ms",
		"raw files in flight", "raw loop files/s", "raw before / after", "ratio"}, "rrrrrrr", rows)
	m.image(figConcurrency, "files per second vs maximum concurrency, pipeline and raw loop")
}

func (m *mdWriter) calls() {
	m.p("## 3. API calls per file and what they cost")
	m.p("")
	c := m.r.Calls
	if c == nil {
		m.notMeasured()
		return
	}
	intro := fmt.Sprintf("The functions' API calls per file over %s files", fmtInt(c.Files))
	if c.Stage != "" {
		intro += " on the `" + c.Stage + "` stage"
	}
	if c.Source != "" {
		intro += " (from " + c.Source + ")"
	}
	m.p("%s, priced by the cost model next to the naive design (one message and one "+
		"invocation per file, three ledger writes).", intro)
	m.p("")
	if len(c.PerFile) > 0 {
		ops := make([]string, 0, len(c.PerFile))
		for op := range c.PerFile {
			ops = append(ops, op)
		}
		slices.Sort(ops)
		var rows [][]string
		for _, op := range ops {
			rows = append(rows, []string{op, fmtFloat(c.PerFile[op], 3)})
		}
		m.table([]string{"service.operation", "calls per file"}, "lr", rows)
	}
	services, ff, naive := costRows(c)
	var rows [][]string
	for i, s := range services {
		rows = append(rows, []string{s, cost.FormatUSD(ff[i]), cost.FormatUSD(naive[i])})
	}
	rows = append(rows, []string{"**orchestration total**",
		"**" + cost.FormatUSD(c.FileflowUSDPerMillion) + "**",
		"**" + cost.FormatUSD(c.NaiveUSDPerMillion) + "**"})
	m.p("Dollars per million files:")
	m.p("")
	m.table([]string{"service", "fileflow", "naive design"}, "lrr", rows)
	if hasFigure(m.r, figCost) {
		m.image(figCost, "dollars per million files by service, fileflow vs naive design")
	}
}

func (m *mdWriter) overhead() {
	m.p("## 4. The worker's own overhead")
	m.p("")
	o := m.r.Overhead
	if o == nil {
		m.notMeasured()
		return
	}
	m.p("`BenchmarkHandlePerFile`: the worker's CPU cost per file with in-memory fakes " +
		"(decoding, ledger bookkeeping, checksums, sniffing, the upload path).")
	m.p("")
	runs := make([]string, len(o.NsPerFile))
	for i, ns := range o.NsPerFile {
		runs[i] = fmtFloat(ns, 0)
	}
	runsCell := strings.Join(runs, " · ")
	if runsCell == "" {
		runsCell = "—"
	}
	m.table([]string{"runs", "ns/file, each run", "median ns/file", "files/s per core",
		"allocs/file", "bytes/file"}, "rlrrrr", [][]string{{
		fmtInt(o.Runs), runsCell, fmtFloat(o.MedianNsPerFile, 0), fmtFloat(o.FilesPerSecPerCore, 0),
		fmtFloat(o.AllocsPerFile, 1), fmtFloat(o.BytesPerFile, 0),
	}})
}

func (m *mdWriter) coldStarts() {
	m.p("## 5. Cold start")
	m.p("")
	cs := m.r.ColdStarts
	if len(cs) == 0 {
		m.notMeasured()
		return
	}
	m.p("Each function's zip size and init time under the local runtime (goal: median ≤ %d ms).",
		ColdStartGoalMs)
	m.p("")
	var rows [][]string
	for _, c := range cs {
		inits := make([]string, len(c.InitMs))
		for i, v := range c.InitMs {
			inits[i] = fmtFloat(v, 1)
		}
		initCell := strings.Join(inits, " · ")
		if initCell == "" {
			initCell = "—"
		}
		met := "✓"
		if c.MedianMs > ColdStartGoalMs {
			met = "✗ over"
		}
		rows = append(rows, []string{c.Function, fmtFloat(zipMB(c.ZipBytes), 1), initCell,
			fmtFloat(c.MedianMs, 1), met})
	}
	m.table([]string{"function", "zip MB", "init ms, each run", "median init ms",
		fmt.Sprintf("≤ %d ms", ColdStartGoalMs)}, "lrlrc", rows)
	m.image(figColdStart, fmt.Sprintf("median init time per function with the %d ms goal line", ColdStartGoalMs))
}

func (m *mdWriter) fanOut() {
	m.p("## 6. Fan-out scale")
	m.p("")
	f := m.r.FanOut
	if f == nil {
		m.notMeasured()
		return
	}
	m.p("Planning (in process: reading the manifest or listing the tree and packing the task " +
		"messages) and, where run, the job on the local stack from submission to finish.")
	m.p("")
	var rows [][]string
	var notes []string
	for _, run := range []struct {
		name string
		f    FanOutRun
	}{{"manifest", f.Manifest}, {"prefix tree", f.Prefix}} {
		job, status, peak := "not run", "—", "—"
		if run.f.JobSeconds > 0 {
			job = fmtFloat(run.f.JobSeconds, 1)
		}
		if run.f.JobStatus != "" {
			status = run.f.JobStatus
		}
		if run.f.DispatcherPeakMiB > 0 {
			peak = fmtFloat(run.f.DispatcherPeakMiB, 1)
		}
		rows = append(rows, []string{run.name, fmtInt(run.f.Keys), fmtFloat(run.f.PlanSeconds, 2),
			fmtInt(run.f.Messages), fmtFloat(run.f.PeakHeapMiB, 1), job, status, peak})
		if run.f.Note != "" {
			notes = append(notes, fmt.Sprintf("- %s: %s", run.name, run.f.Note))
		}
	}
	m.table([]string{"fan-out", "keys", "plan s", "messages", "peak heap growth MiB",
		"job s", "job status", "dispatcher peak MiB"}, "lrrrrrlr", rows)
	for _, n := range notes {
		m.p("%s", n)
	}
	if len(notes) > 0 {
		m.p("")
	}
}

// --- Number formatting ---

// fmtFloat is v to prec decimals, the integer part grouped by thousands.
func fmtFloat(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.HasPrefix(s, "-") && strings.Trim(s, "-0.") == "" {
		s = s[1:] // no "-0.0"
	}
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	intPart, frac, hasFrac := strings.Cut(s, ".")
	var g strings.Builder
	for i, d := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			g.WriteByte(',')
		}
		g.WriteRune(d)
	}
	out := sign + g.String()
	if hasFrac {
		out += "." + frac
	}
	return out
}

func fmtInt(n int) string { return fmtFloat(float64(n), 0) }

// fmtRate is files/s (or MB/s): no decimals from 100 up, where they would be noise, but enough
// below that for large files' few files a second to keep their difference (4.61, 5.59).
// fmtRates is a list of rates, comma separated.
func fmtRates(vs []float64) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = fmtRate(v)
	}
	return strings.Join(out, ", ")
}

func fmtRate(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmtFloat(v, 0)
	case a >= 10:
		return fmtFloat(v, 1)
	}
	return fmtFloat(v, 2)
}

func fmtRatio(v float64) string { return fmtFloat(v, 2) }

// fmtPercent is a share (0.42) as a percentage ("42.0%").
func fmtPercent(share float64) string { return fmtFloat(share*100, 1) + "%" }

// fmtFiles is the files of both loops, once when they are the same.
func fmtFiles(pipeline, rawLoop int) string {
	if pipeline == rawLoop {
		return fmtInt(pipeline)
	}
	return fmtInt(pipeline) + " / " + fmtInt(rawLoop)
}

func fmtDuration(seconds float64) string {
	s := fmtFloat(seconds, 0) + " s"
	if seconds >= 120 {
		s += " (" + fmtFloat(seconds/60, 1) + " min)"
	}
	return s
}
