package workload

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParseSize: a size ParseSize accepts is a number of bytes, never negative, and the
// number it gives reads back as itself; a refused one is named.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"100KB", "100KiB", "1.5MB", "2GiB", "512B", "1000", " 3 MB ", "1e3K", "-1KB", "1e30", "8EiB", "0x1p70", "NaN", "Inf", "", "KB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("the error does not name the value: %v", err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if back, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || back != n {
			t.Fatalf("%q -> %d -> %d, %v", s, n, back, err)
		}
	})
}

// FuzzParseCount: a count ParseCount accepts is a whole number from 0 to 1e15 that reads
// back as itself; a refused one is named.
func FuzzParseCount(f *testing.F) {
	for _, s := range []string{"1000000", "1e6", "1_000_000", "1,000", "1.5", "-1", "1e16", "NaN", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseCount(s)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("the error does not name the value: %v", err)
			}
			return
		}
		if n < 0 || n > 1e15 {
			t.Fatalf("ParseCount(%q) = %d", s, n)
		}
		if back, err := ParseCount(strconv.FormatInt(n, 10)); err != nil || back != n {
			t.Fatalf("%q -> %d -> %d, %v", s, n, back, err)
		}
	})
}
