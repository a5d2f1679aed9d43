package stream

import (
	"path"
	"regexp"
)

// TopicPattern is what a topic name must match.
var TopicPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidTopic reports whether name matches TopicPattern. A loop rather than
// the regexp, which cost 1.6 % of the publishing sidecar's CPU: it runs on
// every publish.
func ValidTopic(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// ValidKey reports whether v is a valid Idempotency-Key or Ordering-Key:
// 1 to 255 visible ASCII characters (0x21–0x7E).
func ValidKey(v string) bool {
	if len(v) == 0 || len(v) > 255 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7E {
			return false
		}
	}
	return true
}

// TopicAllowed reports whether topic matches one of patterns (topic names
// or *-globs, as FERRY_PUBLISH_TOPICS lists them); no patterns allow every
// topic.
func TopicAllowed(patterns []string, topic string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if ok, _ := path.Match(p, topic); ok {
			return true
		}
	}
	return false
}
