// Package dedup will hold eosproxy's idempotent-producer state: per (producer
// id, partition) the epoch and last five batches, and the pure decision of
// whether a Produce batch is new, a duplicate, out of order or fenced.
package dedup
