// Package proxy faces eosproxy's clients: the bootstrap listener and one
// listener per upstream broker, with the map from upstream broker ids to the
// addresses clients are told (brokers.go). Each client connection has a
// reader that routes every request by API key to its handler (route.go; one
// file per intercepted key, named for it as in franz-go's kfake:
// 00_produce.go, 22_init_producer_id.go, …) and a writer that sends the
// responses back in request order (order.go). Handlers decode with kmsg and
// answer from eosproxy's state (dedup, txnstate) or pass the request on;
// framing and the rewriting of broker addresses are package protocol's.
// Connections to the backend, and every request eosproxy makes of it on its
// own behalf, are package upstream's.
package proxy
