package progress

import (
	"fmt"
	"time"
)

// ETA estimates the time left from recent progress only: the rate is measured over the
// last Window, so a burst long ago does not make a stalled job look fast, and the
// estimate is unknown — not growing — while nothing progresses. It never overflows
// into a negative duration, however small the rate.
type ETA struct {
	// Window is how far back the rate is measured (default 10 s).
	Window time.Duration
	// Stall: with no progress for this long, the time left is unknown (default 5 s).
	Stall time.Duration

	samples  []sample
	lastMove time.Time // when done last increased
}

type sample struct {
	at   time.Time
	done int64
}

// MaxLeft caps an estimate: anything longer is shown as more than this.
const MaxLeft = 99 * time.Hour

// Observe records that done units were finished at t. Observations must come in time
// order; a done lower than the last one (a restarted count) starts afresh.
func (e *ETA) Observe(t time.Time, done int64) {
	if n := len(e.samples); n > 0 {
		last := e.samples[n-1]
		if t.Before(last.at) || done < last.done {
			e.samples, e.lastMove = nil, time.Time{}
		} else if done > last.done {
			e.lastMove = t
		}
	}
	if len(e.samples) == 0 {
		e.lastMove = t
	}
	e.samples = append(e.samples, sample{t, done})
	// Keep one sample at or before the window's start, so the window is spanned.
	start := t.Add(-e.window())
	i := 0
	for i+1 < len(e.samples) && !e.samples[i+1].at.After(start) {
		i++
	}
	e.samples = e.samples[i:]
}

func (e *ETA) window() time.Duration {
	if e.Window > 0 {
		return e.Window
	}
	return 10 * time.Second
}

func (e *ETA) stall() time.Duration {
	if e.Stall > 0 {
		return e.Stall
	}
	return 5 * time.Second
}

// Rate is units per second over the window, and 0 while stalled.
func (e *ETA) Rate() float64 {
	n := len(e.samples)
	if n < 2 {
		return 0
	}
	first, last := e.samples[0], e.samples[n-1]
	if last.at.Sub(e.lastMove) >= e.stall() {
		return 0
	}
	span := last.at.Sub(first.at).Seconds()
	if span <= 0 || last.done <= first.done {
		return 0
	}
	return float64(last.done-first.done) / span
}

// Left is the time to reach total at the current rate (0 once done >= total), and
// false while unknown: nothing observed yet, no total yet (a job still listing its
// first page), or no progress for Stall. It is capped at MaxLeft.
func (e *ETA) Left(total int64) (time.Duration, bool) {
	n := len(e.samples)
	if n == 0 || total <= 0 {
		return 0, false
	}
	done := e.samples[n-1].done
	if done >= total {
		return 0, true
	}
	rate := e.Rate()
	if rate <= 0 {
		return 0, false
	}
	secs := float64(total-done) / rate
	if secs >= MaxLeft.Seconds() {
		return MaxLeft, true
	}
	return time.Duration(secs * float64(time.Second)), true
}

// FormatLeft renders [ETA.Left]'s answer: "—" when unknown, "> 99h" at the cap,
// else the duration rounded to seconds.
func FormatLeft(d time.Duration, known bool) string {
	switch {
	case !known:
		return "—"
	case d >= MaxLeft:
		return fmt.Sprintf("> %.0fh", MaxLeft.Hours())
	case d < time.Second:
		return "0s"
	}
	return d.Round(time.Second).String()
}
