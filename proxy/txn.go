package proxy

import "github.com/twmb/franz-go/pkg/kerr"

// eosproxy is the transaction coordinator: the requests below never reach
// the backend. Each handler decodes the request, asks txnstate's Coordinator
// and encodes Kafka's answer for the request's version.
//
//	InitProducerId v0–v5 with a transactional id   22_init_producer_id.go  initProducerIDTxn
//	AddPartitionsToTxn v0–v3 (the client form)      24_add_partitions_to_txn.go
//	AddOffsetsToTxn v0–v4                           25_add_offsets_to_txn.go
//	EndTxn v0–v5 (v5: KIP-890 epoch bump)           26_end_txn.go
//	TxnOffsetCommit v0–v5                           28_txn_offset_commit.go
//	DescribeTransactions v0                         65_describe_transactions.go
//	ListTransactions v0–v2                          66_list_transactions.go
//
// Others are answered by eosproxy only in part:
//
//	FindCoordinator for transactional ids (type 1)  10_find_coordinator.go  findTxnCoordinator
//	OffsetFetch while a transaction holds offsets   09_offset_fetch.go      unstableOffsets, patchOffsets
//	Produce with a transactional id                 00_produce.go           produceTxn

// errName is Kafka's name for an error code, for logs.
func errName(code int16) string {
	if err := kerr.TypedErrorForCode(code); err != nil {
		return err.Message
	}
	return "NONE"
}
