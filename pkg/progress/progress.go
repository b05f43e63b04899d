// Package progress shows how far a long operation has got: on a terminal, a live bar
// (github.com/vbauerster/mpb/v8) with log lines printed above it; anywhere else — a
// pipe, a file, a CI log — a plain line every few seconds and a last one at the end,
// never a carriage return. Its [ETA] is measured over recent progress only: never
// negative, and unknown ("—") while nothing moves.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// Options configure a [Display].
type Options struct {
	// Interval between plain lines when the output is not a terminal (default 5 s).
	Interval time.Duration
	// Logs, if set, is redirected above the bar while the display runs.
	Logs *Logs
	// Now is the clock (tests); default time.Now.
	Now func() time.Time

	// console, if set, is the terminal to draw on (tests).
	console mpb.ConsoleWriter
}

// Display is one progress display. Update it from any goroutine; Finish it once.
type Display struct {
	w   io.Writer
	o   Options
	mu  sync.Mutex
	txt string

	// terminal mode
	p   *mpb.Progress
	bar *mpb.Bar

	// plain mode
	lastLine time.Time
	finished bool
}

// IsTerminal says whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Start begins a display on w.
func Start(w io.Writer, o Options) *Display {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	d := &Display{w: w, o: o}
	opts := []mpb.ContainerOption{mpb.WithOutput(w), mpb.WithRefreshRate(200 * time.Millisecond)}
	switch {
	case o.console != nil:
		opts = append(opts, mpb.WithConsoleWriter(o.console))
	case !IsTerminal(w):
		return d
	}
	d.p = mpb.New(opts...)
	d.bar = d.p.New(0, mpb.BarStyle().Lbound("[").Filler("#").Tip("#").Padding(".").Rbound("]"),
		mpb.BarWidth(24),
		mpb.PrependDecorators(decor.Any(func(st decor.Statistics) string { return percent(st.Current, st.Total) }, decor.WC{W: 4})),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return d.text() })),
	)
	if o.Logs != nil {
		o.Logs.redirect(d.p)
	}
	return d
}

func (d *Display) text() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.txt
}

// Update shows done of total and a line of text (counts, rate, ETA).
func (d *Display) Update(done, total int64, text string) {
	d.mu.Lock()
	d.txt = text
	d.mu.Unlock()
	if d.bar != nil {
		d.bar.SetTotal(max(total, 0), false)
		d.bar.SetCurrent(max(done, 0))
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if now := d.o.Now(); d.lastLine.IsZero() || now.Sub(d.lastLine) >= d.o.Interval {
		d.lastLine = now
		fmt.Fprintln(d.w, plain(done, total, text))
	}
}

// Finish draws the last state and stops the display: complete when done >= total,
// else the bar is left where it stopped. Logs go straight to their writer again.
func (d *Display) Finish(done, total int64, text string) {
	d.mu.Lock()
	if d.finished {
		d.mu.Unlock()
		return
	}
	d.finished = true
	d.txt = text
	d.mu.Unlock()
	if d.bar == nil {
		fmt.Fprintln(d.w, plain(done, total, text))
		return
	}
	d.bar.SetTotal(max(total, 0), false)
	d.bar.SetCurrent(max(done, 0))
	if total > 0 && done >= total {
		d.bar.SetTotal(total, true)
	} else {
		d.bar.Abort(false)
	}
	d.p.Wait()
	if d.o.Logs != nil {
		d.o.Logs.redirect(nil)
	}
}

// plain is one periodic line: percentage and the caller's text.
func plain(done, total int64, text string) string {
	return percent(done, total) + "  " + text
}

// percent is done of total, rounded down: 100% only when all is done.
func percent(done, total int64) string {
	p := int64(0)
	if total > 0 {
		p = min(100, 100*max(done, 0)/total)
	}
	return fmt.Sprintf("%3d%%", p)
}

// Logs is an io.Writer for log lines: straight to its writer, or above the bar while a
// terminal [Display] that was given it runs (so a log line never tears the bar).
type Logs struct {
	mu    sync.Mutex
	out   io.Writer
	above io.Writer
}

// NewLogs returns log output to w.
func NewLogs(w io.Writer) *Logs { return &Logs{out: w} }

func (l *Logs) redirect(w io.Writer) {
	l.mu.Lock()
	l.above = w
	l.mu.Unlock()
}

// Write writes p (whole lines, as log handlers write them).
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	above, out := l.above, l.out
	l.mu.Unlock()
	if above != nil {
		if n, err := above.Write(p); err == nil {
			return n, nil
		}
		// The display has just stopped: fall through to the plain output.
	}
	return out.Write(p)
}
