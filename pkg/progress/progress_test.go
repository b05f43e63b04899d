package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vbauerster/cupwriter"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func TestETA(t *testing.T) {
	t.Run("steady rate", func(t *testing.T) {
		var e ETA
		for i := range 5 {
			e.Observe(at(float64(i)), int64(100*i)) // 100 per second
		}
		left, ok := e.Left(1000) // 600 left at 100/s
		require.True(t, ok)
		assert.Equal(t, 6*time.Second, left)
		assert.InDelta(t, 100, e.Rate(), 1e-9)
	})
	t.Run("unknown before two observations", func(t *testing.T) {
		var e ETA
		_, ok := e.Left(10)
		assert.False(t, ok)
		e.Observe(at(0), 0)
		_, ok = e.Left(10)
		assert.False(t, ok)
	})
	t.Run("a waiting job is unknown, not ever longer", func(t *testing.T) {
		var e ETA
		e.Observe(at(0), 0)
		e.Observe(at(1), 50)
		_, ok := e.Left(100)
		require.True(t, ok)
		// Nothing moves for 6 s (Stall 5 s): the estimate is unknown, the rate 0.
		for s := 2.0; s <= 7; s++ {
			e.Observe(at(s), 50)
		}
		_, ok = e.Left(100)
		assert.False(t, ok)
		assert.Zero(t, e.Rate())
		// Progress again: known again, from the window's rate (60 over the last 8 s
		// window 0..8 → (110-50)/... the window holds samples from t=0).
		e.Observe(at(8), 110)
		left, ok := e.Left(200)
		require.True(t, ok)
		// rate = (110-0)/(8-0) = 13.75/s over the 10 s window; 90 left → 6.545 s.
		assert.InDelta(t, 90/13.75, left.Seconds(), 1e-6)
	})
	t.Run("a tiny rate is capped, never negative", func(t *testing.T) {
		var e ETA
		e.Observe(at(0), 0)
		e.Observe(at(4.9), 1)                 // 1 file in 4.9 s
		left, ok := e.Left(9_000_000_000_000) // would overflow time.Duration
		require.True(t, ok)
		assert.Equal(t, MaxLeft, left)
		assert.Equal(t, "> 99h", FormatLeft(left, ok))
	})
	t.Run("no total yet", func(t *testing.T) {
		var e ETA
		e.Observe(at(0), 0)
		e.Observe(at(1), 0)
		_, ok := e.Left(0)
		assert.False(t, ok, "a job listing its first page has nothing to estimate against")
	})
	t.Run("done or past total", func(t *testing.T) {
		var e ETA
		e.Observe(at(0), 0)
		e.Observe(at(1), 12)
		left, ok := e.Left(10)
		assert.True(t, ok)
		assert.Zero(t, left)
	})
	t.Run("the window forgets old bursts", func(t *testing.T) {
		e := ETA{Window: 10 * time.Second, Stall: time.Hour}
		e.Observe(at(0), 0)
		e.Observe(at(1), 1000) // a burst
		for s := 2.0; s <= 30; s++ {
			e.Observe(at(s), 1000+int64(s-1)) // then 1 per second
		}
		assert.InDelta(t, 1.0, e.Rate(), 1e-9)
	})
	t.Run("a count going back starts afresh", func(t *testing.T) {
		var e ETA
		e.Observe(at(0), 0)
		e.Observe(at(1), 100)
		e.Observe(at(2), 5)
		_, ok := e.Left(10)
		assert.False(t, ok)
	})
}

func TestFormatLeft(t *testing.T) {
	assert.Equal(t, "—", FormatLeft(0, false))
	assert.Equal(t, "0s", FormatLeft(0, true))
	assert.Equal(t, "1m5s", FormatLeft(65*time.Second+300*time.Millisecond, true))
}

// Not a terminal: plain lines, at most one per interval, and a last one; no \r.
func TestPlainLines(t *testing.T) {
	var buf bytes.Buffer
	now := t0
	logs := NewLogs(&buf)
	d := Start(&buf, Options{Interval: 5 * time.Second, Now: func() time.Time { return now }, Logs: logs})
	d.Update(0, 100, "starting")
	now = now.Add(time.Second)
	d.Update(10, 100, "ten") // within the interval: not printed
	_, _ = logs.Write([]byte("a log line\n"))
	now = now.Add(5 * time.Second)
	d.Update(50, 100, "fifty")
	d.Finish(100, 100, "all done")
	d.Finish(100, 100, "twice") // no-op
	assert.Equal(t, "  0%  starting\na log line\n 50%  fifty\n100%  all done\n", buf.String())
	assert.NotContains(t, buf.String(), "\r")
}

// A forced terminal on a buffer: mpb draws the bar; log lines written meanwhile come
// out whole, above it; after Finish, logs go straight through.
func TestTerminalBarWithLogs(t *testing.T) {
	var buf bytes.Buffer
	logs := NewLogs(&buf)
	d := Start(&buf, Options{Logs: logs, console: fakeTerminal{cupwriter.New(&buf, true)}})
	d.Update(3, 10, "three of ten")
	_, err := logs.Write([]byte("scaled up to 4 environments\n"))
	require.NoError(t, err)
	d.Finish(10, 10, "ten of ten")
	_, _ = logs.Write([]byte("after\n"))
	out := buf.String()
	assert.Contains(t, out, "scaled up to 4 environments\n")
	assert.Contains(t, out, "ten of ten")
	assert.True(t, strings.HasSuffix(out, "after\n"), out)
	assert.Less(t, strings.Index(out, "scaled up"), strings.LastIndex(out, "ten of ten"), "the log line above the last bar")
}

// fakeTerminal is a terminal of 120 x 40 on a buffer.
type fakeTerminal struct{ *cupwriter.Writer }

func (fakeTerminal) GetTermSize() (int, int, error) { return 120, 40, nil }
func (fakeTerminal) IsTerminal() bool               { return true }

func TestPercentRoundsDown(t *testing.T) {
	assert.Equal(t, " 99%", percent(2990, 3000), "not 100% while 10 are left")
	assert.Equal(t, "100%", percent(3000, 3000))
	assert.Equal(t, "  0%", percent(5, 0))
	assert.Equal(t, "100%", percent(12, 10))
}
