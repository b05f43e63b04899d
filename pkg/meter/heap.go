package meter

import (
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// PeakHeapGrowth runs fn and returns the peak growth of live heap objects over the
// level before it, sampled every millisecond. Tests use it to show that memory stays
// bounded by buffers, not by input size.
func PeakHeapGrowth(fn func()) uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	runtime.GC()
	base := read()
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if v := read(); v > base && v-base > peak.Load() {
					peak.Store(v - base)
				}
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return peak.Load()
}
