package stream

// Redis keys of DESIGN.md. The topic in braces is a Redis Cluster hash tag:
// one topic's keys share a slot.

// Key is the topic's event stream.
func Key(topic string) string { return "ferry:{" + topic + "}:stream" }

// DeadLetterKey is one consumer group's dead-letter stream for the topic.
func DeadLetterKey(topic, appID string) string { return "ferry:{" + topic + "}:dlq:" + appID }

// RedriveKey is the stream of redriven dead letters, read by that group only.
func RedriveKey(topic, appID string) string { return "ferry:{" + topic + "}:redrive:" + appID }

// ReplayKey holds the stream id up to which entries are replays for that group.
func ReplayKey(topic, appID string) string { return "ferry:{" + topic + "}:replay:" + appID }

// DedupeKey is one group's dedupe state for one message id.
func DedupeKey(topic, appID, msgID string) string {
	return "ferry:{" + topic + "}:dedupe:" + appID + ":" + msgID
}
