package worker

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// BenchmarkFileGoroutine is a file's goroutine in miniature: one GetObject and one
// PutObject of 1 KiB with the real S3 client (against an in-process server), on a new
// goroutine ("new", as processAll started one per file) or on a kept one ("kept",
// goroutines.Go).
func BenchmarkFileGoroutine(b *testing.B) {
	body := bytes.Repeat([]byte("a"), 1024)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("ETag", `"e"`)
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Length", "1024")
			_, _ = w.Write(body)
		}
	}))
	defer srv.Close()
	client := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("k", "s", ""),
	})
	ctx := context.Background()
	one := func() {
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("in"), Key: aws.String("k")})
		if err != nil {
			b.Error(err)
			return
		}
		data, _ := io.ReadAll(out.Body)
		_ = out.Body.Close()
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("out"), Key: aws.String("k"), Body: bytes.NewReader(data)}); err != nil {
			b.Error(err)
		}
	}
	for _, kept := range []bool{false, true} {
		name := map[bool]string{false: "new", true: "kept"}[kept]
		b.Run(name, func(b *testing.B) {
			g := newGoroutines(time.Minute)
			b.ReportAllocs()
			for b.Loop() {
				done := make(chan struct{})
				if kept {
					g.Go(func() { defer close(done); one() })
				} else {
					go func() { defer close(done); one() }()
				}
				<-done
			}
		})
	}
}

// Goroutines are reused while one is waiting, new ones start when none is, and an
// idle one exits.
func TestGoroutines(t *testing.T) {
	g := newGoroutines(50 * time.Millisecond)
	ids := make(chan uint64, 4)
	var wg sync.WaitGroup
	run := func(hold chan struct{}) {
		wg.Add(1)
		g.Go(func() {
			defer wg.Done()
			ids <- goid()
			if hold != nil {
				<-hold
			}
		})
	}
	run(nil)
	wg.Wait()
	first := <-ids
	require.Eventually(t, func() bool { run(nil); wg.Wait(); return <-ids == first }, time.Second, time.Millisecond,
		"the finished goroutine takes the next function")

	hold := make(chan struct{})
	run(hold)
	run(hold) // the first is busy: a second goroutine starts, Go does not block
	a, b := <-ids, <-ids
	assert.NotEqual(t, a, b)
	close(hold)
	wg.Wait()

	before := runtime.NumGoroutine()
	deadline := time.Now().Add(2 * time.Second) // a loop, not Eventually: its checks run on goroutines too
	for runtime.NumGoroutine() > before-2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), before-2, "idle goroutines exit")
}

// goid is the calling goroutine's id, from its stack trace's first line.
func goid() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	f := strings.Fields(string(buf[:n]))
	id, _ := strconv.ParseUint(f[1], 10, 64)
	return id
}
