package stream

import (
	"errors"
	"testing"
	"time"
)

func TestIDLessEq(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"1-0", "1-0", true},
		{"1-0", "1-1", true},
		{"1-1", "1-0", false},
		{"9-0", "10-0", true}, // numeric, not lexical
		{"10-0", "9-0", false},
		{"5-9", "5-10", true},
		{"5-10", "5-9", false},
		{"5", "5-0", true},
		{"0-0", "18446744073709551615-18446744073709551615", true},
	} {
		if got := IDLessEq(c.a, c.b); got != c.want {
			t.Errorf("IDLessEq(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestNextPrevMin(t *testing.T) {
	for _, c := range []struct{ id, next, prev string }{
		{"0-0", "0-1", "0-0"},
		{"5-0", "5-1", "4-18446744073709551615"},
		{"5-3", "5-4", "5-2"},
		{"7", "7-1", "6-18446744073709551615"},
	} {
		if got := NextID(c.id); got != c.next {
			t.Errorf("NextID(%q) = %q, want %q", c.id, got, c.next)
		}
		if got := PrevID(c.id); got != c.prev {
			t.Errorf("PrevID(%q) = %q, want %q", c.id, got, c.prev)
		}
	}
	if got := NextID("garbage"); got != "0-1" {
		t.Errorf("NextID(garbage) = %q", got)
	}
	for _, c := range []struct{ a, b, want string }{
		{"", "", ""}, {"", "3-0", "3-0"}, {"3-0", "", "3-0"}, {"9-0", "10-0", "9-0"}, {"10-0", "9-0", "9-0"},
	} {
		if got := MinID(c.a, c.b); got != c.want {
			t.Errorf("MinID(%q, %q) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

func TestParseFrom(t *testing.T) {
	at := time.Date(2024, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	for _, c := range []struct {
		from, want string
		err        bool
	}{
		{at.Format(time.RFC3339Nano), "1704164645006-0", false},
		{"0", "0-0", false},
		{"1700000000000-7", "1700000000000-7", false},
		{"0001-7", "1-7", false},
		{"1969-12-31T23:59:59Z", "", true},
		{"yesterday", "", true},
		{"1-2-3", "", true},
		{"-1", "", true},
		{"99999999999999999999-0", "", true}, // above uint64
	} {
		got, err := ParseFrom(c.from)
		if c.err {
			if !errors.Is(err, ErrBadFrom) {
				t.Errorf("ParseFrom(%q) = %q, %v; want ErrBadFrom", c.from, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseFrom(%q) = %q, %v; want %q", c.from, got, err, c.want)
		}
	}
	if got := TimeID(at); got != "1704164645006-0" {
		t.Errorf("TimeID = %q", got)
	}
}
