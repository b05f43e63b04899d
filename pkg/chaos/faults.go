package chaos

import (
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/fileflow/fileflow/pkg/meter"
)

// faultMix is how the faulted calls divide among the kinds of fault (weights). A send
// (SQS SendMessage, SendMessageBatch) that draws a fault is sent twice with
// duplicateShare; other calls never get Duplicate.
var faultMix = []struct {
	fault  meter.Fault
	weight int
}{
	{meter.Throttle, 30},
	{meter.ServerError, 15},
	{meter.Reset, 15},
	{meter.LostResponse, 15},
	{meter.Timeout, 5},
	{meter.Slow, 20},
}

const duplicateShare = 0.25

// injector picks the fault for each call of a function and counts what it injected.
type injector struct {
	rate    float64
	enabled atomic.Bool

	mu     sync.Mutex
	rng    *rand.Rand
	calls  int64
	counts map[string]int64 // "kind" and "kind service.op"
}

func newInjector(seed uint64, rate float64) *injector {
	in := &injector{rate: rate, rng: rand.New(rand.NewPCG(seed, 0xfa17)), counts: map[string]int64{}}
	in.enabled.Store(true)
	return in
}

// pick is devstack.Options.Faults.
func (in *injector) pick(function, service, op string, _ *http.Request) meter.Fault {
	if !in.enabled.Load() {
		return meter.Pass
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.calls++
	if in.rng.Float64() >= in.rate {
		return meter.Pass
	}
	var f meter.Fault
	if service == "SQS" && (op == "SendMessage" || op == "SendMessageBatch") && in.rng.Float64() < duplicateShare {
		f = meter.Duplicate
	} else {
		total := 0
		for _, m := range faultMix {
			total += m.weight
		}
		n := in.rng.IntN(total)
		for _, m := range faultMix {
			if n < m.weight {
				f = m.fault
				break
			}
			n -= m.weight
		}
	}
	in.counts[f.String()]++
	in.counts[f.String()+" "+function+" "+service+"."+op]++
	return f
}

// Injected is the faults injected so far by kind, the calls seen, and the detail by
// kind, function and operation.
func (in *injector) injected() (byKind map[string]int64, calls int64, detail []string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	byKind = map[string]int64{}
	for k, v := range in.counts {
		if kind, rest, ok := strings.Cut(k, " "); ok {
			detail = append(detail, kind+" "+rest+"="+strconv.FormatInt(v, 10))
			continue
		}
		byKind[k] = v
	}
	sort.Strings(detail)
	return byKind, in.calls, detail
}
