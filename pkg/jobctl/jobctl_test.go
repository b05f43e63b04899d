package jobctl

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/fileflow/fileflow/pkg/ledger"
)

func TestLine(t *testing.T) {
	running := Status{Status: string(ledger.JobRunning), Counts: ledger.Counts{Expected: 10, Done: 4, Listed: 1000, Succeeded: 390, Failed: 10}}
	assert.Equal(t, "listed 1000  done 390  failed 10  125 files/s  ETA 5s", Line(running, 125, 4800*time.Millisecond, true))
	assert.Equal(t, "listed 1000  done 390  failed 10  0 files/s  ETA —", Line(running, 0, 0, false), "unknown while nothing moves")

	listing := Status{Status: string(ledger.JobRunning), Counts: ledger.Counts{Expected: 3, Done: 1, Listed: 100, Succeeded: 100}}
	assert.Contains(t, Line(listing, 0, 0, false), "listed 100 (listing…)")

	done := Status{Status: "COMPLETE", Counts: ledger.Counts{Listed: 40, Succeeded: 40}}
	assert.Equal(t, "listed 40  done 40  failed 0  3 files/s  ETA COMPLETE", Line(done, 3, 0, true))
}
