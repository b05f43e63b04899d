package task

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The limits of the names a file carries, as S3 sets them.
const (
	// MaxKeyBytes is S3's limit on an object key: 1,024 bytes of UTF-8.
	MaxKeyBytes = 1024
	// MaxBucketBytes bounds a bucket name: 63 today, 255 for buckets made in us-east-1
	// before March 2018.
	MaxBucketBytes = 255
	// MaxEntryName bounds an archive entry's name, leaving room in its output key
	// ("<archive key>!/<entry name>", 1,024 bytes at most) for the archive's key and the
	// output prefix.
	MaxEntryName = 512
)

// CheckKey says why key cannot be an S3 object key — empty, not UTF-8, or over
// [MaxKeyBytes] — or returns nil. No S3 event names such a key; a task message, a
// manifest row or a forged event can, and its GET would fail (or, for invalid UTF-8,
// read a key whose bytes JSON and the ledger have replaced).
func CheckKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("empty key")
	case !utf8.ValidString(key):
		return fmt.Errorf("key %q is not valid UTF-8 (S3 keys are UTF-8)", key)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("key of %d bytes is over S3's limit of %d (%q…)", len(key), MaxKeyBytes, strings.ToValidUTF8(key[:40], ""))
	}
	return nil
}

// CheckBucket says why name cannot be a bucket name, or returns nil. It is lenient
// (legacy bucket names may have capitals and underscores, and local servers accept
// short names), but a name with a '/', a space, a control character or anything beyond
// letters, digits, '.', '-' and '_' never names a bucket — and '/' would make
// s3://bucket/key mean another bucket and key.
func CheckBucket(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty bucket name")
	case len(name) > MaxBucketBytes:
		return fmt.Errorf("bucket name of %d bytes is over %d", len(name), MaxBucketBytes)
	}
	for _, r := range name {
		if !(r < utf8.RuneSelf && (r == '.' || r == '-' || r == '_' || '0' <= r && r <= '9' || 'a' <= r|0x20 && r|0x20 <= 'z')) {
			return fmt.Errorf("bucket name %q has %q (only letters, digits, '.', '-' and '_')", name, r)
		}
	}
	return nil
}

// CheckEntryName says why an archive entry's name is unsafe to extract or to name an
// output after — it could escape the output prefix, or mean something else on another
// system — or returns nil. A name it accepts is a relative path of non-empty elements,
// none "." or "..", without a backslash, a drive letter, a control or invisible format
// character, of at most [MaxEntryName] bytes of UTF-8. (A zip's directory entries, which
// end in "/", are skipped before names are checked.)
func CheckEntryName(name string) error {
	if reason := entryNameProblem(name); reason != "" {
		return fmt.Errorf("entry %q: %s", name, reason)
	}
	return nil
}

func entryNameProblem(name string) string {
	elems := strings.Split(name, "/")
	switch {
	case name == "":
		return "empty name"
	case !utf8.ValidString(name):
		return "name is not valid UTF-8"
	case strings.ContainsFunc(name, unicode.IsControl):
		return "name contains a control character"
	case strings.Contains(name, `\`):
		return "name contains a backslash"
	case strings.HasPrefix(name, "/"):
		return "name is an absolute path"
	case len(name) >= 2 && name[1] == ':' && ('a' <= name[0]|0x20 && name[0]|0x20 <= 'z'):
		return "name starts with a Windows drive letter"
	case slices.Contains(elems, ".."):
		return `name has a ".." path element`
	case slices.Contains(elems, "."), slices.Contains(elems, ""):
		return `name has a "." or empty path element`
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.Is(unicode.Cf, r) }):
		return "name contains an invisible format character (like a right-to-left override)"
	case len(name) > MaxEntryName:
		return fmt.Sprintf("name is %d bytes, over %d (S3 keys are at most %d)", len(name), MaxEntryName, MaxKeyBytes)
	}
	return ""
}
