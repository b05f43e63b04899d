package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fileflow/fileflow/pkg/job"
)

// runJobs submits every planned job, a few hundred milliseconds apart, with the
// duplicate and conflicting submissions the plan names; starts the listing changes of
// the changing jobs and the cancel of the cancelled one.
func (h *harness) runJobs(ctx context.Context) {
	var wg sync.WaitGroup
	for _, jp := range h.plan.jobs {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(h.intn(400)) * time.Millisecond):
		}
		if err := h.submit(ctx, jp); err != nil {
			h.actorError("submit %s: %v", jp.name, err)
			continue
		}
		if jp.resubmit {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(h.intn(3000)) * time.Millisecond)
				if err := h.submit(ctx, jp); err != nil {
					h.actorError("submit %s again: %v", jp.name, err)
					return
				}
				h.dupSubmits.Add(1)
				if jp.conflict {
					other := jp.spec
					other.Key += "other/"
					_, err := job.Submit(ctx, h.db, h.st.SQS, h.jobsQueue, other, time.Now())
					var conflict *job.ConflictError
					if errors.As(err, &conflict) {
						h.refusedConflicts.Add(1)
					} else {
						h.actorError("a different spec under job id %s was not refused: %v", jp.spec.ID, err)
					}
				}
			}()
		}
		if jp.changes {
			wg.Add(1)
			go func() { defer wg.Done(); h.changeListing(ctx, jp) }()
		}
		if jp.cancelAt > 0 {
			wg.Add(1)
			go func() { defer wg.Done(); h.cancelLater(ctx, jp) }()
		}
	}
	wg.Wait()
}

// submit sends the job: through the job API, or by uploading its spec under jobs/ (the
// upload is notified; the worker forwards it to the dispatcher).
func (h *harness) submit(ctx context.Context, jp *jobPlan) error {
	h.submittedMu.Lock()
	h.submitted[jp.name] = jp.spec.ID
	h.submittedMu.Unlock()
	if jp.viaUpload {
		b, err := json.Marshal(jp.spec)
		if err != nil {
			return err
		}
		return retry(ctx, func() error {
			_, err := h.st.S3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(h.st.Resources.IngestBucket),
				Key: aws.String(job.SpecPrefix + jp.spec.ID + ".json"), Body: strings.NewReader(string(b))})
			return err
		})
	}
	return retry(ctx, func() error {
		_, err := job.Submit(ctx, h.db, h.st.SQS, h.jobsQueue, jp.spec, time.Now())
		var conflict *job.ConflictError
		if errors.As(err, &conflict) {
			return fmt.Errorf("%w (not retried)", err)
		}
		return err
	})
}

// changeListing changes a running prefix job's prefix through the notifying endpoint:
// adds files, overwrites some, deletes some — each change has its S3 event, so every
// key must end accounted whether the job's listing saw it or not.
func (h *harness) changeListing(ctx context.Context, jp *jobPlan) {
	time.Sleep(time.Duration(200+h.intn(1500)) * time.Millisecond)
	n := max(3, len(jp.files)/20)
	for i := range n {
		if ctx.Err() != nil {
			return
		}
		h.rngMu.Lock()
		op := h.rng.IntN(3)
		target := jp.files[h.rng.IntN(len(jp.files))]
		added, poison := fileName(h.rng, jp.spec.Key+"added/", i, h.cfg.PoisonRate)
		var c content
		switch op {
		case 0:
			c = makeContent(h.rng, added, poison)
		case 1:
			c = makeContent(h.rng, target, false)
		}
		h.rngMu.Unlock()
		var err error
		switch op {
		case 0:
			err = h.put(ctx, true, added, c, jp.name)
		case 1:
			if h.truth.isPoison(target) {
				continue // an .exe stays poison; keep the job's failures countable
			}
			err = h.put(ctx, true, target, c, "")
		case 2:
			_, err = h.st.S3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(h.st.Resources.IngestBucket), Key: aws.String(target)})
			if err == nil {
				h.truth.deletedKey(target)
			}
		}
		if err != nil {
			h.actorError("change %s: %v", jp.spec.Key, err)
			continue
		}
		h.listingChanges.Add(1)
		time.Sleep(time.Duration(h.intn(150)) * time.Millisecond)
	}
}

// cancelLater cancels the job once cancelAt of its files have succeeded (if it has
// not finished by then).
func (h *harness) cancelLater(ctx context.Context, jp *jobPlan) {
	for ctx.Err() == nil {
		time.Sleep(200 * time.Millisecond)
		j, found, err := h.db.GetJob(ctx, jp.spec.ID)
		if err != nil || !found {
			continue
		}
		if j.Status != "RUNNING" {
			return // finished first: its plan accepts COMPLETE
		}
		c, err := h.db.PeekCounts(ctx, jp.spec.ID, j.Shards)
		if err != nil || c.Succeeded < jp.cancelAt {
			continue
		}
		err = retry(ctx, func() error {
			_, err := h.engine.Cancel(ctx, jp.spec.ID, "cancelled by the chaos run")
			if err != nil && strings.Contains(err.Error(), "already") {
				return nil
			}
			return err
		})
		if err != nil {
			h.actorError("cancel %s: %v", jp.name, err)
			return
		}
		h.cancelled.Add(1)
		return
	}
}
