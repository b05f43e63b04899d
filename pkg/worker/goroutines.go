package worker

import "time"

// goroutines runs functions on goroutines kept from earlier ones, so that a file's
// work runs on a stack that has already grown.
//
// A file's goroutine calls the AWS SDK, whose middleware chain runs dozens of frames
// deep (S3's endpoint rules alone are one large frame). A new goroutine's stack starts
// at the average size the last GC saw (small: most goroutines are) and doubles on the
// way, and each step copies what is on it and walks its frames. The CPU profile of the
// worker processes under `fileflow bench profile` put runtime.newstack at 7% of their
// time when processAll started a goroutine per file, and almost none in the raw loop,
// whose goroutines live for the whole run; with kept goroutines, 1%. (Growing each new
// goroutine's stack at once, as CockroachDB's util/growstack does, was tried: zeroing a
// fresh 64 KiB frame every time cost as much as the copies it saved.) Servers keep
// goroutines for the same reason (fasthttp's workerPool).
//
// The GC halves the stack of a parked goroutine that uses less than a quarter of it, so
// the gain holds within a stream of batches more than across long gaps. A goroutine
// waits idle for more work, then exits (an environment frozen between invocations keeps
// it frozen). Concurrent Handle calls on one Handler (Lambda Managed Instances,
// AWS_LAMBDA_MAX_CONCURRENCY > 1) share the goroutines; each call bounds its own.
type goroutines struct {
	next chan func() // unbuffered: a send succeeds only if a goroutine is waiting
	idle time.Duration
}

func newGoroutines(idle time.Duration) *goroutines {
	return &goroutines{next: make(chan func()), idle: idle}
}

// Go runs f on a waiting goroutine, or on a new one if none is waiting. It never
// blocks: how many run at once is the caller's to bound.
func (g *goroutines) Go(f func()) {
	select {
	case g.next <- f:
	default:
		go g.serve(f)
	}
}

func (g *goroutines) serve(f func()) {
	t := time.NewTimer(g.idle)
	defer t.Stop()
	for {
		f()
		f = nil // hold nothing of the last call while waiting
		t.Reset(g.idle)
		select {
		case f = <-g.next:
		case <-t.C:
			return
		}
	}
}
