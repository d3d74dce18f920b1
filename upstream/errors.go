package upstream

import "github.com/twmb/franz-go/pkg/kerr"

// Ambiguous tells, for a Produce error the backend answered, whether the
// backend may hold the batch although it did not say so: the outcome is
// unclear, and the batch must be looked for (or resent under the same
// producer id and sequence) rather than taken as not written.
func Ambiguous(code int16) bool {
	switch code {
	case kerr.UnknownServerError.Code, kerr.RequestTimedOut.Code, kerr.NetworkException.Code,
		kerr.NotEnoughReplicasAfterAppend.Code, kerr.KafkaStorageError.Code:
		return true
	case kerr.DuplicateSequenceNumber.Code: // older brokers' answer to a resent batch under a paired producer id
		return true
	}
	return false
}
