// Package localtest starts the local AWS-API servers for a test binary.
package localtest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/fileflow/fileflow/pkg/local"
)

// Servers is the running set started by [Main]; nil outside it.
var Servers *local.Servers

// Main starts the local servers, points the AWS SDK at them through the standard
// AWS_ENDPOINT_URL_* variables, runs the tests and stops the servers. Call it from
// TestMain: os.Exit(localtest.Main(m)). A test binary that cannot start them fails
// with the reason; it never skips.
func Main(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	srv, err := local.Start(ctx, local.Options{})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the tests need the local S3, SQS and DynamoDB servers and could not start them:\n%v\n", err)
		return 1
	}
	defer srv.Stop()
	if err := srv.Setenv(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	Servers = srv
	return m.Run()
}
