package lambda

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/local/provision"
)

// CI at d0ba022 panicked in net/http.(*Server).Serve on a nil server: the endpoint's
// goroutine read e.srv after Close had set it to nil (an environment whose bootstrap
// cannot start is closed at once, before that goroutine runs). The goroutine serves the
// server it was started with.
func TestCloseRightAfterAFailedStartDoesNotPanic(t *testing.T) {
	cfg := Config{Function: &provision.Function{Name: "fileflow-worker", Timeout: time.Second}, Binary: "/nonexistent/bootstrap"}
	for i := range 300 {
		e := NewEnvironment(cfg, i)
		_, err := e.Invoke(context.Background(), []byte(`{}`))
		require.Error(t, err, "a bootstrap that does not exist cannot start")
		e.Close()
	}
}
