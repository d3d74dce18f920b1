// Package protocol holds eosproxy's knowledge of Kafka's wire format: frame and
// header codec, the version tables eosproxy needs, and the rewriting of
// responses that carry broker addresses. It does no I/O, so every function is
// a pure transformation of bytes and can be table-tested and fuzzed.
package protocol
