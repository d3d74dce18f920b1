package txnstate

// Kafka error codes the coordinator answers with (Errors.java). They are the
// wire values; the names follow the dedup package's convention.
const (
	ErrNone                      int16 = 0
	ErrUnknownServerError        int16 = -1
	ErrNotEnoughReplicas         int16 = 19
	ErrInvalidRequest            int16 = 42
	ErrInvalidProducerEpoch      int16 = 47
	ErrInvalidTxnState           int16 = 48
	ErrInvalidProducerIDMapping  int16 = 49
	ErrInvalidTransactionTimeout int16 = 50
	ErrConcurrentTransactions    int16 = 51
	ErrProducerFenced            int16 = 90
	ErrTransactionAbortable      int16 = 120
)

// fencedFor downgrades PRODUCER_FENCED to INVALID_PRODUCER_EPOCH for clients
// too old to know it (KIP-588). KafkaApis does this per API: InitProducerId
// below v4, AddPartitionsToTxn, AddOffsetsToTxn and EndTxn below v2.
func fencedFor(code int16, knowsFenced bool) int16 {
	if code == ErrProducerFenced && !knowsFenced {
		return ErrInvalidProducerEpoch
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
	case code == ErrProducerFenced:
		return ErrInvalidProducerEpoch
	case code == ErrTransactionAbortable && !knowsAbortable:
		return ErrInvalidTxnState
	}
	return code
}

// ErrorName returns Kafka's name for the codes used here, for logs and test
// failures.
func ErrorName(code int16) string {
	switch code {
	case ErrNone:
		return "NONE"
	case ErrUnknownServerError:
		return "UNKNOWN_SERVER_ERROR"
	case ErrNotEnoughReplicas:
		return "NOT_ENOUGH_REPLICAS"
	case ErrInvalidRequest:
		return "INVALID_REQUEST"
	case ErrInvalidProducerEpoch:
		return "INVALID_PRODUCER_EPOCH"
	case ErrInvalidTxnState:
		return "INVALID_TXN_STATE"
	case ErrInvalidProducerIDMapping:
		return "INVALID_PRODUCER_ID_MAPPING"
	case ErrInvalidTransactionTimeout:
		return "INVALID_TRANSACTION_TIMEOUT"
	case ErrConcurrentTransactions:
		return "CONCURRENT_TRANSACTIONS"
	case ErrProducerFenced:
		return "PRODUCER_FENCED"
	case ErrTransactionAbortable:
		return "TRANSACTION_ABORTABLE"
	}
	return "UNKNOWN"
}
