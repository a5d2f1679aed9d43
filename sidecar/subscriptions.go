package sidecar

import (
	"context"
	"errors"
	"log/slog"

	"github.com/ferry-sidecar/ferry/config"
	"github.com/ferry-sidecar/ferry/delivery"
	"github.com/ferry-sidecar/ferry/delivery/daprformat"
	"github.com/ferry-sidecar/ferry/internal/daprsub"
	"github.com/ferry-sidecar/ferry/stream"
)

// subscription is one subscription to run, from FERRY_SUBSCRIPTIONS or
// from the app's /dapr/subscribe.
type subscription struct {
	topic, route    string
	format          delivery.Format // nil: plain
	deadLetterTopic string
}

// loadSubscriptions returns the subscriptions to run. With
// FERRY_APP_SUBSCRIBE=dapr it asks the app (GET /dapr/subscribe), retrying
// while it boots (up to 60 s): a malformed answer or a rule that does not compile is a
// *config.VarError naming FERRY_APP_SUBSCRIBE (exit 2); an app that never
// answers is an error wrapping daprsub.ErrAppNotReady.
func loadSubscriptions(ctx context.Context, cfg config.Config, log *slog.Logger) ([]subscription, error) {
	if cfg.AppSubscribe != "dapr" {
		subs := make([]subscription, 0, len(cfg.Subscriptions))
		for _, s := range cfg.Subscriptions {
			subs = append(subs, subscription{topic: s.Topic, route: s.Route})
		}
		return subs, nil
	}
	found, err := daprsub.Fetch(ctx, daprsub.FetchConfig{
		AppURL: cfg.AppURL, Token: cfg.AppToken, // Wait: daprsub's 60 s
		Parse:  daprsub.ParseOptions{PubsubName: cfg.PubsubName, ValidTopic: stream.ValidTopic},
		Logger: log.With("component", "daprsub"),
	})
	var pe *daprsub.ParseError
	if errors.As(err, &pe) {
		return nil, &config.VarError{Var: config.Prefix + "APP_SUBSCRIBE", Err: err}
	}
	if err != nil {
		return nil, err
	}
	subs := make([]subscription, 0, len(found))
	for i := range found {
		f := &found[i]
		subs = append(subs, subscription{topic: f.Topic, route: f.Rules[len(f.Rules)-1].Path,
			format: daprformat.New(f, cfg.AppURL), deadLetterTopic: f.DeadLetterTopic})
		log.Info("dapr subscription", "topic", f.Topic, "routes", len(f.Rules),
			"dead_letter_topic", f.DeadLetterTopic, "raw_payload", f.RawPayload)
	}
	return subs, nil
}

func topicsOf(subs []subscription) []string {
	t := make([]string, len(subs))
	for i, s := range subs {
		t[i] = s.topic
	}
	return t
}
