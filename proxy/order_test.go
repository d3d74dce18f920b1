package proxy

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
)

// Responses go back in request order even when later requests' answers are
// ready first: here the first request's answer is made last, after kfake
// has the second request and the third is answered by eosproxy at once.
func TestResponsesKeepRequestOrder(t *testing.T) {
	// DescribeConfigs passes through; here it gets a local answer that
	// waits for release, as a transactional Produce's waits for its batches
	// to be durable. Swapped in before the conn starts, back after it ends.
	slow := kmsg.DescribeConfigs.Int16()
	release := make(chan struct{})
	routes[slow] = func(c *conn, r *request) error {
		r.slot.local, r.slot.wait = true, func() []byte { <-release; return []byte("slow") }
		return nil
	}
	t.Cleanup(func() { routes[slow] = nil })
	env := newConnEnv(t, false)

	meta := kmsg.NewPtrMetadataRequest()
	meta.SetVersion(12)
	describe := kmsg.NewPtrDescribeTransactionsRequest()
	describe.TransactionalIDs = []string{"nope"}
	env.send(t,
		req(slow, 0, 1, nil),
		req(protocol.KeyMetadata, 12, 2, meta.AppendTo(nil)),
		req(protocol.KeyDescribeTxns, 0, 3, describe.AppendTo(nil)),
	)
	for k := range env.asked {
		if k == protocol.KeyMetadata {
			break
		}
	}
	close(release)

	f := readFrame(t, env.cr)
	if corr := int32(binary.BigEndian.Uint32(f)); corr != 1 || !bytes.Equal(f[4:], []byte("slow")) {
		t.Fatalf("first response: correlation id %d, body %q; want 1, \"slow\"", corr, f[4:])
	}
	if m := env.response(t, protocol.KeyMetadata, 12, 2).(*kmsg.MetadataResponse); len(m.Brokers) != 1 {
		t.Fatalf("Metadata: %d brokers", len(m.Brokers))
	}
	dt := env.response(t, protocol.KeyDescribeTxns, 0, 3).(*kmsg.DescribeTransactionsResponse)
	if len(dt.TransactionStates) != 1 || dt.TransactionStates[0].ErrorCode != kerr.TransactionalIDNotFound.Code {
		t.Fatalf("DescribeTransactions answered %+v", dt.TransactionStates)
	}
}

// A request of eosproxy's own on a client's connection (askUpstream) goes
// upstream in line with the client's requests, its answer reaches the
// reader and never the client: the client gets exactly its own three
// answers, in order.
func TestOwnRequestAnswerNotSentToClient(t *testing.T) {
	// DescribeConfigs is routed here to a handler that asks the upstream
	// for its metadata and answers with the number of brokers it named.
	asking := kmsg.DescribeConfigs.Int16()
	routes[asking] = func(c *conn, r *request) error {
		m := kmsg.NewPtrMetadataRequest()
		m.SetVersion(8)
		body, err := c.askUpstream(m)
		if err != nil {
			return err
		}
		resp := kmsg.NewPtrMetadataResponse()
		resp.SetVersion(8)
		if err := resp.ReadFrom(body); err != nil {
			return err
		}
		r.answer([]byte{byte(len(resp.Brokers))})
		return nil
	}
	t.Cleanup(func() { routes[asking] = nil })
	env := newConnEnv(t, false)

	meta := kmsg.NewPtrMetadataRequest()
	meta.SetVersion(12)
	env.send(t,
		req(protocol.KeyMetadata, 12, 1, meta.AppendTo(nil)),
		req(asking, 0, 2, nil),
		req(protocol.KeyMetadata, 12, 3, meta.AppendTo(nil)),
	)
	if m := env.response(t, protocol.KeyMetadata, 12, 1).(*kmsg.MetadataResponse); len(m.Brokers) != 1 {
		t.Fatalf("first Metadata: %d brokers", len(m.Brokers))
	}
	f := readFrame(t, env.cr)
	if corr := int32(binary.BigEndian.Uint32(f)); corr != 2 || !bytes.Equal(f[4:], []byte{1}) {
		t.Fatalf("second response: correlation id %d, body %v; want 2, [1] (one broker, from the own request's answer)", corr, f[4:])
	}
	if m := env.response(t, protocol.KeyMetadata, 12, 3).(*kmsg.MetadataResponse); len(m.Brokers) != 1 {
		t.Fatalf("third Metadata: %d brokers", len(m.Brokers))
	}
}
