package txnstate

import "github.com/twmb/franz-go/pkg/kerr"

// The coordinator answers with Kafka's error codes by their kerr names
// (kerr.ProducerFenced.Code); ErrNone is Errors.NONE, which kerr has no
// value for.
const ErrNone int16 = 0

// fencedFor downgrades PRODUCER_FENCED to INVALID_PRODUCER_EPOCH for clients
// too old to know it (KIP-588). KafkaApis does this per API: InitProducerId
// below v4, AddPartitionsToTxn, AddOffsetsToTxn and EndTxn below v2.
func fencedFor(code int16, knowsFenced bool) int16 {
	if code == kerr.ProducerFenced.Code && !knowsFenced {
		return kerr.InvalidProducerEpoch.Code
	}
	return code
}

// verificationError translates a coordinator answer into what a partition
// leader or group coordinator tells the producer after transaction
// verification (AddPartitionsToTxnManager): producers expect
// INVALID_PRODUCER_EPOCH there, never PRODUCER_FENCED, and clients older than
// the TRANSACTION_ABORTABLE error get INVALID_TXN_STATE instead.
func verificationError(code int16, knowsAbortable bool) int16 {
	switch {
	case code == kerr.ProducerFenced.Code:
		return kerr.InvalidProducerEpoch.Code
	case code == kerr.TransactionAbortable.Code && !knowsAbortable:
		return kerr.InvalidTxnState.Code
	}
	return code
}

// ErrorName returns Kafka's name for an error code, for logs and test
// failures.
func ErrorName(code int16) string {
	if code == ErrNone {
		return "NONE"
	}
	if e := kerr.TypedErrorForCode(code); e != kerr.UnknownServerError || code == e.Code {
		return e.Message
	}
	return "UNKNOWN"
}
