// Package txnstate is eosproxy's transaction coordinator: per transactional
// id the producer id, epoch, state, partitions and pending offsets, and the
// batches buffered until commit.
//
// The decisions are pure functions following Kafka 4.x's
// TransactionCoordinator, TransactionMetadata and TransactionState: each
// takes the stored *Txn (nil when unknown) and a request and returns a
// Result — the new Txn to make durable before answering (nil when nothing
// changes), the Kafka error code for the request's version, the producer
// id/epoch the response carries, and an Action (forward or discard the
// buffered data, then call Complete). The legal transitions are one table
// (validPrevious in state.go), checked in one place for every Result.
// Persistence, buffering and forwarding are the caller's.
package txnstate
