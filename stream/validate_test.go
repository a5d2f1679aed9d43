package stream

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// ValidTopic is a hand-written loop; it must agree with TopicPattern, which
// config errors quote, on every string of up to two bytes and at the
// length limit.
func TestValidTopicMatchesPattern(t *testing.T) {
	check := func(s string) {
		if got, want := ValidTopic(s), TopicPattern.MatchString(s); got != want {
			t.Fatalf("ValidTopic(%q) = %v, TopicPattern says %v", s, got, want)
		}
	}
	check("")
	for a := range 256 {
		check(string([]byte{byte(a)}))
		for b := range 256 {
			check(string([]byte{byte(a), byte(b)}))
		}
	}
	for n := 120; n <= 130; n++ {
		check(string(bytes.Repeat([]byte("a"), n)))
		check("x" + string(bytes.Repeat([]byte("-"), n)))
	}
}

// referenceTopic is the DESIGN.md topic rule written as a loop.
func referenceTopic(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return false
		}
	}
	return true
}

func FuzzValidTopic(f *testing.F) {
	for _, s := range []string{"orders", "a", "", "-x", ".x", "a.b_c-d", "with space", "x\n", "ÿ", strings.Repeat("a", 128), strings.Repeat("a", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidTopic(s), referenceTopic(s); got != want {
			t.Fatalf("ValidTopic(%q) = %v, reference says %v", s, got, want)
		}
	})
}

var keyReference = regexp.MustCompile(`^[\x21-\x7e]{1,255}$`)

func FuzzValidKey(f *testing.F) {
	for _, s := range []string{"order-42", "", " ", "a b", "~!", "\x7f", "é", strings.Repeat("k", 255), strings.Repeat("k", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// The regexp works on runes: only compare where s is ASCII, and
		// require any non-ASCII byte to be refused.
		ascii := true
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				ascii = false
			}
		}
		got := ValidKey(s)
		if !ascii {
			if got {
				t.Fatalf("ValidKey(%q) accepts non-ASCII", s)
			}
			return
		}
		if want := keyReference.MatchString(s); got != want {
			t.Fatalf("ValidKey(%q) = %v, reference says %v", s, got, want)
		}
	})
}

func TestTopicAllowed(t *testing.T) {
	for _, c := range []struct {
		patterns []string
		topic    string
		want     bool
	}{
		{nil, "anything", true},
		{[]string{"orders"}, "orders", true},
		{[]string{"orders"}, "orders2", false},
		{[]string{"orders.*", "invoices"}, "orders.created", true},
		{[]string{"orders.*"}, "orders", false},
		{[]string{"*"}, "x", true},
	} {
		if got := TopicAllowed(c.patterns, c.topic); got != c.want {
			t.Errorf("TopicAllowed(%q, %q) = %v, want %v", c.patterns, c.topic, got, c.want)
		}
	}
}
