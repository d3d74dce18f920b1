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
//
// Coordinator makes those decisions durable in badger (requests.go,
// save.go; load.go reads them back) and carries them out (jobs.go).
// Buffered batches (buffer.go) are appended to spool files (package spool;
// read back with pread, so they stay out of eosproxy's memory) and indexed
// in badger by transactional id and generation — one generation per
// transaction. A decided commit or abort is completed in the same write that
// records it and queued as a job; a runner per id carries the jobs out in
// order (forward.go and send.go: the batches to the backend exactly once,
// then the offsets), while the client may already buffer its next
// transaction.
package txnstate
