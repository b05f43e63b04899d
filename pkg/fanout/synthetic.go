package fanout

import (
	"bytes"
	"fmt"
	"io"
)

// SyntheticCSV is an n-line S3 Batch Operations CSV manifest generated on the fly (no
// storage): bucket "ingest-bucket", URL-encoded keys spread over 1,000 prefixes. The
// planning benchmarks (make bench, BenchmarkPlanManifest1M) read it.
func SyntheticCSV(n int) io.Reader { return &syntheticCSV{n: n} }

type syntheticCSV struct {
	n, i int
	buf  bytes.Buffer
}

func (m *syntheticCSV) Read(p []byte) (int, error) {
	for m.buf.Len() < len(p) && m.i < m.n {
		fmt.Fprintf(&m.buf, "ingest-bucket,data/%03d/file%%20%07d.csv\n", m.i%1000, m.i)
		m.i++
	}
	if m.buf.Len() == 0 {
		return 0, io.EOF
	}
	return m.buf.Read(p)
}
