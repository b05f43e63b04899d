package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fileflow/fileflow/pkg/ledger"
)

// RawResult is what [RawLoop] measured.
type RawResult struct {
	Files       int     `json:"files"`
	Seconds     float64 `json:"seconds"`
	FilesPerSec float64 `json:"files_per_sec"`
	Concurrency int     `json:"concurrency"`
	// P50ms and P99ms are the files' own times: GET, PUT and the ledger write.
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
}

// RawLoop is the floor the pipeline is compared with: for every key, the same S3 GET, S3
// PUT and conditional ledger write (the same UpdateItem) the worker does, with no queue,
// no runtime, no processors and no duplicate check, from `concurrency` goroutines.
func RawLoop(ctx context.Context, s3c *s3.Client, db *dynamodb.Client, in, out, table string, keys []string, concurrency int) (RawResult, error) {
	return RawLoopAs(ctx, s3c, db, in, out, table, keys, concurrency, "raw/")
}

// RawLoopAs is [RawLoop] writing its outputs and records under prefix + key, so passes
// over the same inputs each make new records (a warm-up's passes).
func RawLoopAs(ctx context.Context, s3c *s3.Client, db *dynamodb.Client, in, out, table string, keys []string, concurrency int, prefix string) (RawResult, error) {
	if concurrency < 1 {
		concurrency = 32
	}
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	took := make([]float64, len(keys))
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(keys) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := rawOne(ctx, s3c, db, in, out, table, prefix, keys[i]); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				took[i] = float64(time.Since(t0).Microseconds()) / 1000
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return RawResult{}, firstErr
	}
	sort.Float64s(took)
	return RawResult{Files: len(keys), Seconds: el.Seconds(), FilesPerSec: float64(len(keys)) / el.Seconds(), Concurrency: concurrency,
		P50ms: percentile(took, 0.50), P99ms: percentile(took, 0.99)}, nil
}

func rawOne(ctx context.Context, s3c *s3.Client, db *dynamodb.Client, in, out, table, prefix, key string) error {
	obj, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(in), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("raw: get %s: %w", key, err)
	}
	body, err := io.ReadAll(obj.Body)
	obj.Body.Close()
	if err != nil {
		return fmt.Errorf("raw: read %s: %w", key, err)
	}
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(out), Key: aws.String(prefix + key), Body: bytes.NewReader(body)}); err != nil {
		return fmt.Errorf("raw: put %s: %w", key, err)
	}
	// The very same conditional write the worker commits with.
	sum := sha256.Sum256(body)
	err = ledger.New(db, table, 0).Write(ctx, ledger.Write{Key: ledger.Key{Bucket: in, Key: prefix + key},
		Rev: ledger.Revision{ETag: strings.Trim(aws.ToString(obj.ETag), `"`)}, Status: ledger.StatusSucceeded,
		Result: ledger.Result{Size: int64(len(body)), OutputSize: int64(len(body)), SHA256: hex.EncodeToString(sum[:]),
			Outputs: []string{"s3://" + out + "/" + prefix + key}, Processors: []string{"copy"}},
		Attempt: ledger.Attempt{At: time.Now(), Receive: 1}})
	if err != nil && !errors.Is(err, ledger.ErrAlreadySucceeded) {
		return fmt.Errorf("raw: commit %s: %w", key, err)
	}
	return nil
}
