// Package daprpub owns the pieces of Dapr's HTTP publish API that do not
// touch the outbox: the error bodies and status codes, the metadata.* query
// parameters, and the bulk publish request and answer bodies. The handlers in
// publish/ use it so that an app written for Dapr sees what Dapr would answer.
//
// # Dapr's answers, verified against dapr/dapr at d8450742 (Dapr 1.18)
//
// Error bodies are {"errorCode":"ERR_…","message":"…"}: dapr/kit's
// errors.Error.JSONErrorValue, written by respondWithError in
// pkg/api/http/responses.go; Dapr adds a "details" array (google.rpc
// ErrorInfo/ResourceInfo), which ferry leaves out. Codes: pkg/messages/
// errorcodes/errorcodes.go; statuses and messages: pkg/api/errors/pubsub.go;
// which error when: onPublish, onBulkPublish and validateAndGetPubsubAndTopic
// in pkg/api/http/http.go.
//
//	errorCode                    status  when
//	ERR_PUBSUB_NOT_CONFIGURED    400     no pub/sub component at all
//	ERR_PUBSUB_EMPTY             404     pubsubname empty
//	ERR_PUBSUB_NOT_FOUND         404     unknown pubsubname
//	ERR_TOPIC_NAME_EMPTY         404     topic empty
//	ERR_PUBSUB_REQUEST_METADATA  400     metadata.rawPayload not a boolean
//	ERR_PUBSUB_CLOUD_EVENTS_SER  500     envelope cannot be built (a
//	                                     cloudevents+json body that is not a
//	                                     JSON object)
//	ERR_PUBSUB_EVENTS_SER        400     envelope cannot be marshalled; bulk:
//	                                     body not a JSON array of entries,
//	                                     event does not match contentType,
//	                                     entryId empty or duplicated
//	ERR_PUBSUB_FORBIDDEN         403     topic not allowed for this app id
//	ERR_PUBSUB_PUBLISH_MESSAGE   500     the broker refused the publish
//
// Success is 204 with no body for both endpoints. A failed bulk publish
// answers 500 with {"failedEntries":[{"entryId","error"}],"errorCode":
// "ERR_PUBSUB_PUBLISH_MESSAGE"} (pkg/api/http/responses.go
// BulkPublishResponse). Dapr's topic-not-found from the broker answers 400
// with ERR_PUBSUB_NOT_FOUND (TestNotFound); ferry has no such case.
//
// # Where ferry differs
//
//   - A bulk entry with no event (missing or null) is refused with
//     ERR_PUBSUB_EVENTS_SER; Dapr publishes JSON null.
//   - Request-level metadata applies to every bulk entry; Dapr merges it only
//     into entries that carry metadata of their own.
//   - An invalid ttl is ERR_PUBSUB_REQUEST_METADATA (400); Dapr ignores it.
//   - When the outbox refuses (full, disk, shutting down), the status and
//     Retry-After are ferry's (503), the body Dapr's ERR_PUBSUB_PUBLISH_MESSAGE.
//   - Every message names the bulk entry by index and entryId.
package daprpub
