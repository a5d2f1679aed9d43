package stream

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var idPattern = regexp.MustCompile(`^[0-9]{1,20}(-[0-9]{1,20})?$`)

// ValidID reports whether s looks like a stream id: "ms" or "ms-seq".
func ValidID(s string) bool { return idPattern.MatchString(s) }

// SplitID parses "ms-seq" (or "ms", seq 0).
func SplitID(id string) (ms, seq uint64, ok bool) {
	a, b, hasSeq := strings.Cut(id, "-")
	ms, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if hasSeq {
		if seq, err = strconv.ParseUint(b, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return ms, seq, true
}

// IDLessEq reports whether stream id a ≤ b, comparing numerically.
func IDLessEq(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	if len(am) != len(bm) {
		return len(am) < len(bm)
	}
	if am != bm {
		return am < bm
	}
	if len(as) != len(bs) {
		return len(as) < len(bs)
	}
	return as <= bs
}

// MinID returns the smaller stream id; "" is no id.
func MinID(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	case IDLessEq(a, b):
		return a
	}
	return b
}

// NextID returns the smallest id after id ("0-1" for an unparseable one).
func NextID(id string) string {
	ms, seq, ok := SplitID(id)
	if !ok {
		return "0-1"
	}
	return fmt.Sprintf("%d-%d", ms, seq+1)
}

// PrevID returns the id just before id; "0-0" has none and returns itself.
func PrevID(id string) string {
	ms, seq, _ := SplitID(id)
	switch {
	case seq > 0:
		return fmt.Sprintf("%d-%d", ms, seq-1)
	case ms > 0:
		return fmt.Sprintf("%d-%d", ms-1, uint64(math.MaxUint64))
	}
	return "0-0"
}

// ErrBadFrom is a replay start that is neither RFC 3339 nor a stream id.
var ErrBadFrom = errors.New(`"from" must be an RFC 3339 time or a stream id like 1700000000000-0`)

// ParseFrom turns a replay start (an RFC 3339 time or a stream id) into the
// first stream id to deliver again.
func ParseFrom(from string) (string, error) {
	if t, err := time.Parse(time.RFC3339Nano, from); err == nil {
		if t.UnixMilli() < 0 {
			return "", ErrBadFrom
		}
		return strconv.FormatInt(t.UnixMilli(), 10) + "-0", nil
	}
	if !ValidID(from) {
		return "", ErrBadFrom
	}
	ms, seq, ok := SplitID(from)
	if !ok {
		return "", ErrBadFrom
	}
	return fmt.Sprintf("%d-%d", ms, seq), nil
}

// TimeID is the first stream id at or after t.
func TimeID(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) + "-0" }
