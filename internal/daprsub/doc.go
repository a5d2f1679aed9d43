// Package daprsub owns Dapr-style programmatic subscriptions
// (FERRY_APP_SUBSCRIBE=dapr): asking the app for GET /dapr/subscribe while it
// boots ([Fetch]), reading and checking the answer ([Parse]), choosing the
// route of an event with the CEL routing rules ([Subscription.Route]), and
// reading the app's answer to a delivery ([Classify]).
//
// # What it promises, and Dapr's behaviour it mirrors
//
// Verified against dapr/dapr at d8450742 (Dapr 1.18):
//
//   - The answer is a JSON array of {pubsubname, topic, route, routes:
//     {rules: [{match, path}], default}, metadata, deadLetterTopic} as Dapr's
//     SubscriptionJSON (pkg/runtime/pubsub/subscriptions.go
//     GetSubscriptionsHTTP). Unknown members (bulkSubscribe, priority,
//     disableTopicValidation, …) are ignored, as encoding/json ignores them
//     for Dapr. metadata values are strings, as for Dapr.
//   - Rules are tried in order, then routes.default, else route (Dapr
//     ignores route when routes.default is set). A path gets a leading "/"
//     and is cleaned (path.Clean), as Dapr's app channel does.
//   - A match is compiled with github.com/google/cel-go the way Dapr's
//     pkg/expr does: every identifier the expression uses is declared as a
//     dynamic variable; the event is bound to the variable event, so rules
//     read event.type, event.data.amount, event.topic… An expression that
//     does not compile is an error naming the subscription and the rule.
//   - An event that matches no rule is not delivered; Dapr drops it (and
//     publishes it to deadLetterTopic when set). [Subscription.Route]
//     returns [ErrNoRoute] so that ferry dead-letters it with reason dropped.
//   - [Classify] reads an answer as pkg/runtime/subscription/postman/http
//     Deliver does: 2xx with an empty or unparseable body, or status ""
//     or "SUCCESS": success; "RETRY": retry; "DROP": drop; any other status
//     string: retry; 404: drop; any other status: retry.
//
// # Where ferry is stricter than Dapr
//
// Dapr logs and skips what it cannot use; ferry refuses to start instead,
// so that no topic is silently left without delivery ([ParseError] says
// which entry and why): a subscription with no route at all, an empty topic,
// a pubsubname other than FERRY_PUBSUB_NAME, the same topic twice, a
// metadata.rawPayload that is not a boolean, and an answer that is not a
// JSON array. Dapr treats a 404 from /dapr/subscribe as "no
// subscriptions"; so does [Fetch]. Other non-200 answers Dapr takes as no
// subscriptions; [Fetch] retries them until its deadline, since an app that
// is still booting often answers 503.
package daprsub
