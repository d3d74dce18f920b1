package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"

	"github.com/eosproxy/eosproxy/txnstate"
)

// pipeEnv is a one-broker kfake (with idempotence) and a Client of it.
func pipeEnv(t *testing.T) (*Client, txnstate.TopicPartition) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var b *Client
	b, err = New(Config{Seeds: c.ListenAddrs(), DialTimeout: 10 * time.Second, Dial: (&net.Dialer{}).DialContext,
		BrokerAddr: func(id int32) (string, error) {
			brokers, err := b.Brokers(context.Background())
			for _, br := range brokers {
				if br.NodeID == id {
					return net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port))), nil
				}
			}
			return "", err
		},
		DB: memDB(t), ProducerIDExpiration: time.Hour, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, txnstate.TopicPartition{Topic: "t", Partition: 0}
}

// producerBatch is a one-record batch holding value, stamped with the
// producer fields unless pid is -1.
func producerBatch(pid int64, epoch int16, seq int32, value string) []byte {
	rec := kmsg.Record{Value: []byte(value)}
	rec.Length = int32(len(rec.AppendTo(nil)) - 1) // the length varint of 0 is one byte
	b := kmsg.RecordBatch{Magic: 2, NumRecords: 1, Records: rec.AppendTo(nil)}
	b.Length = int32(len(b.AppendTo(nil)) - 12)
	raw := b.AppendTo(nil)
	// CRC-32C from the attributes on: SetProducer updates a right CRC.
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	if pid < 0 {
		protocol.ClearProducer(raw, len(raw))
	} else {
		protocol.SetProducer(raw, len(raw), pid, epoch, seq)
	}
	return raw
}

// Batches sent back to back on a pipe, before any answer, reach the broker
// in send order: kfake checks their sequences (a reordering is
// OUT_OF_ORDER_SEQUENCE_NUMBER) and gives them consecutive offsets.
func TestPipeKeepsSendOrder(t *testing.T) {
	b, tp := pipeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pid, epoch, err := b.InitProducerID(ctx)
	if err != nil {
		t.Fatalf("InitProducerId: %v", err)
	}
	const n = 50
	var waits []func(context.Context) map[txnstate.TopicPartition]txnstate.ProduceResult
	for i := range n {
		batch := producerBatch(pid, epoch, int32(i), fmt.Sprint(i))
		waits = append(waits, b.Send(ctx, map[txnstate.TopicPartition][]byte{tp: batch}))
	}
	for i, w := range waits {
		r := w(ctx)[tp]
		if r.Err != nil || r.BaseOffset != int64(i) {
			t.Fatalf("batch %d: offset %d, %v; want offset %d", i, r.BaseOffset, r.Err, i)
		}
	}
	offs, err := kadm.NewClient(b.admin).ListEndOffsets(ctx, tp.Topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup(tp.Topic, tp.Partition); o.Offset != n {
		t.Fatalf("partition ends at %d, want %d", o.Offset, n)
	}
}

// When the pipe's connection fails, every send in flight on it is
// answered as unclear (it may have been written) and the next send dials a
// new connection.
func TestPipeFailureIsUnclear(t *testing.T) {
	b, tp := pipeEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	leaders, _, err := b.leaders.lookup(ctx, b, []txnstate.TopicPartition{tp})
	if err != nil {
		t.Fatal(err)
	}
	pp, err := b.pipes.get(ctx, b, leaders[tp])
	if err != nil {
		t.Fatal(err)
	}
	// Stop the reader from seeing answers: fail the pipe with sends queued.
	w := b.Send(ctx, map[txnstate.TopicPartition][]byte{tp: producerBatch(-1, 0, 0, "a")})
	pp.fail(errors.New("test: connection lost"))
	after := b.Send(ctx, map[txnstate.TopicPartition][]byte{tp: producerBatch(-1, 0, 0, "b")})
	r := w(ctx)[tp]
	if r.Err == nil && r.BaseOffset != 0 {
		t.Fatalf("send before the failure: %+v", r)
	}
	if r.Err != nil && !r.Ambiguous {
		t.Fatalf("send in flight on a failed pipe answered %v, not unclear", r.Err)
	}
	// The send after the failure went on a new connection.
	if r := after(ctx)[tp]; r.Err != nil {
		t.Fatalf("send after the failure: %v", r.Err)
	}
	if pp2, err := b.pipes.get(ctx, b, leaders[tp]); err != nil || pp2 == pp {
		t.Fatalf("pipe not replaced after its failure (%v)", err)
	}
}
