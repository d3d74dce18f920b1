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
