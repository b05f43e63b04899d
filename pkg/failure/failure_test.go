package failure

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCodes(t *testing.T) {
	err := fmt.Errorf("run: %w", Newf(Rejected, "rejected by rule: %s", "no executables"))
	code, st := CodeOf(err, ProcessorFailed)
	assert.Equal(t, Rejected, code)
	assert.Equal(t, 403, st)
	var p interface{ Permanent() bool }
	assert.True(t, errors.As(err, &p) && p.Permanent())

	tr := fmt.Errorf("get: %w", Transient(NoSuchKey, errors.New("no such key")))
	code, st = CodeOf(tr, ProcessorFailed)
	assert.Equal(t, NoSuchKey, code)
	assert.Equal(t, 404, st)
	assert.True(t, errors.As(tr, &p) && !p.Permanent(), "a transient failure is not permanent")

	code, st = CodeOf(errors.New("plain"), RetriesExhausted)
	assert.Equal(t, RetriesExhausted, code)
	assert.Equal(t, 500, st)
	for c := range status {
		assert.NotZero(t, StatusOf(c), c)
	}
}

type coded struct{ error }

func (coded) FailureCode() string { return TooLarge }

func TestCoderOfAnotherPackage(t *testing.T) {
	code, st := CodeOf(fmt.Errorf("open: %w", coded{errors.New("too big")}), ProcessorFailed)
	assert.Equal(t, TooLarge, code)
	assert.Equal(t, 413, st)
}
