// Package txnstate will hold eosproxy's transaction coordinator: the state
// machine per transactional id and the batches buffered until commit.
package txnstate
