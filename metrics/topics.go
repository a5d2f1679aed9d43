package metrics

import (
	"sync"

	"github.com/ferry-sidecar/ferry/stream"
)

// OtherTopic is the topic label of topics past the bound.
const OtherTopic = "other"

// TopicLabels bounds the values of a `topic` label: a topic matching one of
// the allowed patterns (FERRY_PUBLISH_TOPICS) keeps its name; without
// patterns the first max distinct topics keep theirs and later ones are
// counted as OtherTopic. An app that puts ids in topic names cannot blow
// up Prometheus.
type TopicLabels struct {
	patterns []string
	max      int
	mu       sync.Mutex
	seen     map[string]struct{}
}

// NewTopicLabels bounds topic labels by patterns (path.Match globs; empty:
// any) and at most max distinct values.
func NewTopicLabels(patterns []string, max int) *TopicLabels {
	return &TopicLabels{patterns: patterns, max: max, seen: map[string]struct{}{}}
}

// Label returns the label value for topic.
func (t *TopicLabels) Label(topic string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.seen[topic]; ok {
		return topic
	}
	if len(t.seen) >= t.max || !stream.TopicAllowed(t.patterns, topic) {
		return OtherTopic
	}
	t.seen[topic] = struct{}{}
	return topic
}
