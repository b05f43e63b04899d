package process

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Rule chooses what happens to the files it matches. Empty match fields match anything.
type Rule struct {
	Prefix      string   `json:"prefix,omitempty"`       // key prefix
	Suffix      string   `json:"suffix,omitempty"`       // key suffix, e.g. ".csv"
	ContentType string   `json:"content_type,omitempty"` // prefix of the source's Content-Type, e.g. "text/"
	MaxSize     int64    `json:"max_size,omitempty"`     // larger files fail permanently; 0: no limit
	Processors  []string `json:"processors,omitempty"`   // applied in order
	Reject      string   `json:"reject,omitempty"`       // if set, matching files fail permanently with this reason
}

// Matches reports whether the rule applies to a file with this key and content type.
func (r Rule) Matches(key, contentType string) bool {
	return strings.HasPrefix(key, r.Prefix) && strings.HasSuffix(key, r.Suffix) &&
		strings.HasPrefix(contentType, r.ContentType)
}

// Rules are tried in order; the first that matches a file applies.
type Rules []Rule

// DefaultRules checksum, detect and copy every file.
var DefaultRules = Rules{{Processors: []string{"checksum", "detect", "copy"}}}

// Match returns the first rule that applies, and false if none does.
func (rs Rules) Match(key, contentType string) (Rule, bool) {
	for _, r := range rs {
		if r.Matches(key, contentType) {
			return r, true
		}
	}
	return Rule{}, false
}

// ParseRules reads rules from JSON and checks them against reg: every processor must be
// known, every rule must either reject or name processors, and sizes can't be negative.
func ParseRules(data []byte, reg Registry) (Rules, error) {
	var rs Rules
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rs); err != nil {
		return nil, fmt.Errorf("process: rules are not a JSON list of rules: %w", err)
	}
	if end := dec.InputOffset(); !atEOF(dec) {
		return nil, fmt.Errorf("process: rules: more after the JSON list, which ends at byte %d (one list of rules)", end)
	}
	if err := rs.Validate(reg); err != nil {
		return nil, err
	}
	for i := range rs {
		if len(rs[i].Processors) == 0 {
			// "processors": [] is no processors: one form, so the rules read back the
			// same from their JSON (found by FuzzParseRules).
			rs[i].Processors = nil
		}
	}
	return rs, nil
}

// atEOF says whether dec has nothing left but white space.
func atEOF(dec *json.Decoder) bool {
	_, err := dec.Token()
	return err == io.EOF
}

// Validate checks every rule against reg and returns all problems at once.
func (rs Rules) Validate(reg Registry) error {
	if len(rs) == 0 {
		return errors.New("process: no rules: every file would fail (use at least one rule)")
	}
	var errs []error
	for i, r := range rs {
		switch {
		case r.Reject != "" && len(r.Processors) > 0:
			errs = append(errs, fmt.Errorf("rule %d: has both reject and processors", i))
		case r.Reject == "" && len(r.Processors) == 0:
			errs = append(errs, fmt.Errorf("rule %d: names no processors and does not reject", i))
		}
		if r.MaxSize < 0 {
			errs = append(errs, fmt.Errorf("rule %d: max_size %d is negative", i, r.MaxSize))
		}
		if _, err := reg.Lookup(r.Processors); err != nil {
			errs = append(errs, fmt.Errorf("rule %d: %w", i, err))
		}
	}
	if len(errs) > 0 {
		// One line: configuration errors are quoted in larger ones, line by line.
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return fmt.Errorf("process: invalid rules: %s", strings.Join(msgs, "; "))
	}
	return nil
}
