package metrics

import (
	"strconv"
	"testing"
)

func TestTopicLabelsAreBounded(t *testing.T) {
	tl := NewTopicLabels(nil, 3)
	for i := range 2000 {
		got := tl.Label("t" + strconv.Itoa(i))
		if want := "t" + strconv.Itoa(i); i < 3 && got != want || i >= 3 && got != OtherTopic {
			t.Fatalf("topic %d: label %q", i, got)
		}
	}
	if got := tl.Label("t1"); got != "t1" {
		t.Fatalf("a known topic keeps its label: %q", got)
	}
	scoped := NewTopicLabels([]string{"orders.*"}, 100)
	if scoped.Label("orders.x") != "orders.x" || scoped.Label("billing") != OtherTopic {
		t.Fatal("patterns bound the labels")
	}
}
