package txnstate

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Badger keys of the coordinator. A transactional id or topic may hold any
// byte, so each is length-prefixed. Each transaction of an id has a
// generation (a number unique in the store): its buffered batches, and the
// queued completion of a decided commit or abort, are keyed by it, so that
// the next transaction can buffer while the previous one is forwarded.
//
//	txn/m/<id>                              the Txn (JSON)
//	txn/g/<id>                              generation of its latest transaction
//	txn/s/<id><topic><partition>             the producer's sequence state there
//	txn/b/<id><gen><topic><partition><n>     one buffered batch (a spool reference), n a global counter
//	txn/q/<id><gen>                          a decided, not yet carried out, commit or abort (JSON)
//	txn/w/<id><gen><topic><partition>        forwarding low-water offset (and sequence)
//	txn/u/<id>                              eosproxy's own producer id and last epoch for id's forwarding
//	txn/v/<id><gen>                          the producer id and epoch a generation is forwarded with
//	txn/l/<group><topic><partition>          decision order of the latest carried-out commit holding its offset
const (
	prefixMeta  = "txn/m/"
	prefixGen   = "txn/g/"
	prefixSeq   = "txn/s/"
	prefixBatch = "txn/b/"
	prefixJob   = "txn/q/"
	prefixLow   = "txn/w/"
	// Forwarding with eosproxy's own producer (backends with idempotence).
	prefixUpstream    = "txn/u/"
	prefixGenProducer = "txn/v/"
	// txn/o/<id><gen>: a decided commit's place in the decision order.
	prefixDecided = "txn/o/"
	// txn/x/<id>: its open transaction lost a batch and can only abort.
	prefixBroken = "txn/x/"
	// txn/l/<group><topic><partition>: the decision order (job.seq) of the
	// latest decided commit holding an offset there, written when a commit
	// holding one is retired. Decided commits not yet carried out keep
	// their order in txn/o/; this keeps it once they are gone, so that an
	// earlier commit still unfinished at a restart cannot write its older
	// offset over the one the backend already has from a later commit.
	prefixOffsetOrder = "txn/l/"
)

func groupTPKey(group string, tp TopicPartition) []byte {
	b := appendStr(appendStr([]byte(prefixOffsetOrder), group), tp.Topic)
	return binary.BigEndian.AppendUint32(b, uint32(tp.Partition))
}

// parseGroupTPKey splits a key made by groupTPKey.
func parseGroupTPKey(key []byte) (string, TopicPartition, error) {
	group, tp, err := parseTPKey(prefixOffsetOrder, key)
	return group, tp, err
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func readStr(b []byte) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, errors.New("short key")
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, errors.New("short key")
	}
	return string(b[2 : 2+n]), b[2+n:], nil
}

func idKey(prefix, id string) []byte { return appendStr([]byte(prefix), id) }

func tpKey(prefix, id string, tp TopicPartition) []byte {
	b := appendStr(idKey(prefix, id), tp.Topic)
	return binary.BigEndian.AppendUint32(b, uint32(tp.Partition))
}

func genKey(prefix, id string, gen uint64) []byte {
	return binary.BigEndian.AppendUint64(idKey(prefix, id), gen)
}

func genTPKey(prefix, id string, gen uint64, tp TopicPartition) []byte {
	b := appendStr(genKey(prefix, id, gen), tp.Topic)
	return binary.BigEndian.AppendUint32(b, uint32(tp.Partition))
}

func batchKey(id string, gen uint64, tp TopicPartition, n uint64) []byte {
	return binary.BigEndian.AppendUint64(genTPKey(prefixBatch, id, gen, tp), n)
}

// parseTPKey splits a key made by tpKey.
func parseTPKey(prefix string, key []byte) (id string, tp TopicPartition, err error) {
	id, _, tp, _, err = parseKey(prefix, key, false)
	return
}

// parseGenTPKey splits a key made by genTPKey or batchKey (rest holds the
// batch counter).
func parseGenTPKey(prefix string, key []byte) (id string, gen uint64, tp TopicPartition, rest []byte, err error) {
	return parseKey(prefix, key, true)
}

// parseGenKey splits a key made by genKey.
func parseGenKey(prefix string, key []byte) (string, uint64, error) {
	id, b, err := readStr(key[len(prefix):])
	if err != nil || len(b) != 8 {
		return "", 0, errors.New("corrupt key")
	}
	return id, binary.BigEndian.Uint64(b), nil
}

func parseKey(prefix string, key []byte, withGen bool) (id string, gen uint64, tp TopicPartition, rest []byte, err error) {
	b := key[len(prefix):]
	if id, b, err = readStr(b); err != nil {
		return
	}
	if withGen {
		if len(b) < 8 {
			err = errors.New("short key")
			return
		}
		gen, b = binary.BigEndian.Uint64(b), b[8:]
	}
	if tp.Topic, b, err = readStr(b); err != nil {
		return
	}
	if len(b) < 4 {
		err = errors.New("short key")
		return
	}
	tp.Partition = int32(binary.BigEndian.Uint32(b))
	return id, gen, tp, b[4:], nil
}

// record is Txn as stored: maps keyed by structs become lists.
type record struct {
	ID         string
	PID        int64
	LastPID    int64
	NextPID    int64
	Epoch      int16
	LastEpoch  int16
	TimeoutMs  int32
	State      State
	Partitions []TopicPartition `json:",omitempty"`
	Groups     []groupRecord    `json:",omitempty"`
	StartMs    int64
	UpdateMs   int64
	Version    int8
}

type groupRecord struct {
	Group      string
	MemberID   string `json:",omitempty"`
	Generation int32
	InstanceID string         `json:",omitempty"`
	Offsets    []offsetRecord `json:",omitempty"`
}

type offsetRecord struct {
	TopicPartition
	Offset
}

func encodeTxn(t *Txn) []byte {
	r := record{
		ID: t.TransactionalID, PID: t.ProducerID, LastPID: t.LastProducerID, NextPID: t.NextProducerID,
		Epoch: t.Epoch, LastEpoch: t.LastEpoch, TimeoutMs: t.TimeoutMs, State: t.State,
		StartMs: t.StartTimeMs, UpdateMs: t.LastUpdateMs, Version: t.TxnVersion,
	}
	for tp := range t.Partitions {
		r.Partitions = append(r.Partitions, tp)
	}
	slices.SortFunc(r.Partitions, compareTP)
	for g, o := range t.PendingOffsets {
		gr := groupRecord{Group: g, MemberID: o.MemberID, Generation: o.GenerationID, InstanceID: o.GroupInstanceID}
		for tp, off := range o.Offsets {
			gr.Offsets = append(gr.Offsets, offsetRecord{tp, off})
		}
		slices.SortFunc(gr.Offsets, func(a, b offsetRecord) int { return compareTP(a.TopicPartition, b.TopicPartition) })
		r.Groups = append(r.Groups, gr)
	}
	slices.SortFunc(r.Groups, func(a, b groupRecord) int { return compareStr(a.Group, b.Group) })
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("txnstate: encode %q: %v", t.TransactionalID, err)) // only plain types: cannot fail
	}
	return b
}

func decodeTxn(b []byte) (*Txn, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode transaction state: %w", err)
	}
	if !r.State.Valid() {
		return nil, fmt.Errorf("decode transaction state of %q: unknown state %d", r.ID, r.State)
	}
	t := &Txn{
		TransactionalID: r.ID, ProducerID: r.PID, LastProducerID: r.LastPID, NextProducerID: r.NextPID,
		Epoch: r.Epoch, LastEpoch: r.LastEpoch, TimeoutMs: r.TimeoutMs, State: r.State,
		StartTimeMs: r.StartMs, LastUpdateMs: r.UpdateMs, TxnVersion: r.Version,
	}
	if len(r.Partitions) > 0 {
		t.Partitions = make(map[TopicPartition]struct{}, len(r.Partitions))
		for _, tp := range r.Partitions {
			t.Partitions[tp] = struct{}{}
		}
	}
	if len(r.Groups) > 0 {
		t.PendingOffsets = make(map[string]GroupOffsets, len(r.Groups))
		for _, g := range r.Groups {
			o := GroupOffsets{MemberID: g.MemberID, GenerationID: g.Generation, GroupInstanceID: g.InstanceID}
			if len(g.Offsets) > 0 {
				o.Offsets = make(map[TopicPartition]Offset, len(g.Offsets))
				for _, off := range g.Offsets {
					o.Offsets[off.TopicPartition] = off.Offset
				}
			}
			t.PendingOffsets[g.Group] = o
		}
	}
	return t, nil
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// CompareTopicPartition orders partitions by topic, then number.
func CompareTopicPartition(a, b TopicPartition) int { return compareTP(a, b) }

func compareTP(a, b TopicPartition) int {
	if c := compareStr(a.Topic, b.Topic); c != 0 {
		return c
	}
	return int(a.Partition) - int(b.Partition)
}

type kv struct{ k, v []byte }
