// Package itest lists prefixes against the real local S3 server (versitygw).
package itest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/fanout"
	"github.com/fileflow/fileflow/pkg/local/localtest"
	"github.com/fileflow/fileflow/pkg/task"
)

func TestMain(m *testing.M) { os.Exit(localtest.Main(m)) }

// A prefix of 10,500 keys in nested "directories" is listed by 8 parallel listers
// (breadth first: common prefixes and continuation tokens become tasks): every key is
// found exactly once, with its ETag, and non-matching keys and other prefixes are not.
func TestPrefixListingParallelBFS(t *testing.T) {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	require.NoError(t, err)
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	const bucket = "fanout-prefix-test"
	_, err = c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	require.NoError(t, err)

	// 10,500 .csv keys: data/<a 0-9>/<b 0-9>/<i>.csv plus a flat data/top-<i>.csv run,
	// and keys that must not be listed: another suffix and another prefix.
	var want []string
	for a := range 10 {
		for b := range 10 {
			for i := range 100 {
				want = append(want, fmt.Sprintf("data/%d/%d/f %03d.csv", a, b, i))
			}
		}
	}
	for i := range 500 {
		want = append(want, fmt.Sprintf("data/top-%04d.csv", i))
	}
	others := []string{"data/3/readme.txt", "elsewhere/x.csv", "data/9/9/notes.json"}
	put := make(chan string)
	var pw sync.WaitGroup
	for range 16 {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for k := range put {
				_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(k), Body: strings.NewReader(k)})
				assert.NoError(t, err)
			}
		}()
	}
	for _, k := range append(append([]string{}, want...), others...) {
		put <- k
	}
	close(put)
	pw.Wait()

	// Parallel BFS with 8 listers and a shared task queue; pages of 250 keys, so
	// continuation tokens are exercised too.
	tasks := make(chan fanout.ListTask, 10_000)
	var mu sync.Mutex
	found := map[string]int{}
	var pending sync.WaitGroup
	pending.Add(1)
	tasks <- fanout.ListTask{Bucket: bucket, Prefix: "data/", Suffix: ".csv"}
	pages := 0
	var lw sync.WaitGroup
	for range 8 {
		lw.Add(1)
		go func() {
			defer lw.Done()
			for tk := range tasks {
				files, children, err := fanout.ListPage(ctx, c, tk, 250)
				assert.NoError(t, err)
				mu.Lock()
				pages++
				for _, f := range files {
					found[f.Key]++
					assert.NotEmpty(t, f.ETag, f.Key)
					assert.Equal(t, task.File{Bucket: bucket, Key: f.Key, ETag: f.ETag, Size: int64(len(f.Key))}, f)
				}
				mu.Unlock()
				pending.Add(len(children))
				for _, ch := range children {
					tasks <- ch
				}
				pending.Done()
			}
		}()
	}
	pending.Wait()
	close(tasks)
	lw.Wait()

	assert.Len(t, found, len(want))
	for _, k := range want {
		assert.Equal(t, 1, found[k], "listed once: %s", k)
	}
	for _, k := range others {
		assert.Zero(t, found[k], "not listed: %s", k)
	}
	t.Logf("%d keys listed in %d pages by 8 parallel listers", len(found), pages)
}
