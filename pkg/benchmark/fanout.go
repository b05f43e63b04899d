package benchmark

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fileflow/fileflow/pkg/fanout"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/meter"
)

// PlanManifest is section 6's planning of an n-key manifest, in process, as the
// dispatcher does it: the manifest read as a stream and packed into task messages. Its
// time (the best of `runs`, the others being the same work warmer) and the live heap's
// peak growth.
func PlanManifest(n, runs int) (FanOutRun, error) {
	run := FanOutRun{Keys: n}
	for i := range max(1, runs) {
		var files, messages int
		var err error
		start := time.Now()
		peak := meter.PeakHeapGrowth(func() {
			p := &fanout.Packer{JobID: "bench", Emit: func([]byte, int) error { return nil }}
			err = fanout.Read(fanout.SyntheticCSV(n), fanout.FormatCSV, "", p.Add, func(e *fanout.EntryError) error { return e })
			if err == nil {
				err = p.Flush()
			}
			files, messages = p.Files, p.Messages
		})
		took := time.Since(start).Seconds()
		if err != nil {
			return run, fmt.Errorf("benchmark: plan manifest: %w", err)
		}
		if files != n {
			return run, fmt.Errorf("benchmark: plan manifest: %d of %d keys planned", files, n)
		}
		if i == 0 || took < run.PlanSeconds {
			run.PlanSeconds = round(took, 3)
		}
		run.Messages = messages
		run.PeakHeapMiB = max(run.PeakHeapMiB, round(float64(peak)/(1<<20), 1))
	}
	return run, nil
}

// PrefixJob is section 6's prefix tree on the local stack: n small objects in a nested
// tree (put straight into the ingest bucket, so no S3 events), then a prefix job over it,
// timed from submission to its notification. PlanSeconds is the dispatcher's listing and
// fan-out (submission until every key is listed); DispatcherPeakMiB the dispatcher
// processes' largest resident set.
func PrefixJob(ctx context.Context, e Env, n int) (FanOutRun, error) {
	e.log().Info("prefix job", "keys", n)
	run := FanOutRun{Keys: n}
	st, err := e.start(ctx, false, nil)
	if err != nil {
		return run, err
	}
	defer st.Stop()
	st.Resume()
	bucket := st.Resources.IngestBucket
	keys := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				if _, err := st.S3Direct.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(k), Body: strings.NewReader(k + "\n")}); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	for i := range n {
		// 10 top directories of 10 of 10: 1,000 leaves of about n/1,000 keys.
		keys <- fmt.Sprintf("tree/d%d/e%d/f%d/file-%06d.txt", i%10, (i/10)%10, (i/100)%10, i)
	}
	close(keys)
	wg.Wait()
	if failed.Load() > 0 {
		return run, fmt.Errorf("benchmark: prefix job: %d uploads failed", failed.Load())
	}
	q, err := st.JobsQueue()
	if err != nil {
		return run, fmt.Errorf("benchmark: prefix job: %w", err)
	}
	db := ledger.New(st.DynamoDB, st.Resources.Table, 0)
	rss := &peakRSS{}
	stopRSS := rss.watch("/dispatch/bootstrap")
	defer stopRSS()
	start := time.Now()
	id, err := job.Submit(ctx, db, st.SQS, q.URL, job.Spec{Kind: job.KindPrefix, Bucket: bucket, Key: "tree/"}, start)
	if err != nil {
		return run, fmt.Errorf("benchmark: prefix job: %w", err)
	}
	deadline := start.Add(20 * time.Minute)
	for {
		if time.Now().After(deadline) {
			return run, fmt.Errorf("benchmark: prefix job %s did not finish in 20 minutes", id)
		}
		j, _, err := db.GetJob(ctx, id)
		if err != nil {
			return run, fmt.Errorf("benchmark: prefix job: %w", err)
		}
		if run.PlanSeconds == 0 {
			c, err := db.JobCounts(ctx, id, j.Shards)
			if err == nil && c.Listed >= int64(n) {
				run.PlanSeconds = round(time.Since(start).Seconds(), 2)
			}
		}
		if j.Status != ledger.JobRunning && j.Notified {
			run.JobSeconds = round(time.Since(start).Seconds(), 2)
			run.JobStatus = string(j.Status)
			c, err := db.JobCounts(ctx, id, j.Shards)
			if err != nil {
				return run, fmt.Errorf("benchmark: prefix job: %w", err)
			}
			run.Messages = int(c.Expected)
			if c.Succeeded != int64(n) {
				return run, fmt.Errorf("benchmark: prefix job %s: %s with %d of %d files succeeded", id, j.Status, c.Succeeded, n)
			}
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	stopRSS()
	run.DispatcherPeakMiB = round(float64(rss.peak.Load())/(1<<10), 1)
	return run, nil
}

// peakRSS follows the largest peak resident set (VmHWM) of processes whose executable
// ends with a suffix, in KiB.
type peakRSS struct{ peak atomic.Int64 }

func (p *peakRSS) watch(suffix string) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			p.sample(suffix)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

func (p *peakRSS) sample(suffix string) {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		exe, err := os.Readlink(filepath.Join(d, "exe"))
		if err != nil || !strings.HasSuffix(exe, suffix) {
			continue
		}
		status, err := os.ReadFile(filepath.Join(d, "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				for {
					old := p.peak.Load()
					if kb <= old || p.peak.CompareAndSwap(old, kb) {
						break
					}
				}
			}
		}
	}
}
