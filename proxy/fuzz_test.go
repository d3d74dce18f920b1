package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/dedup"
	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate"
)

// The fuzz targets here feed arbitrary request bodies, at every version
// eosproxy accepts, to the handlers that decode client requests and answer
// them locally: the transaction coordinator (txn.go lists its files),
// InitProducerId and DescribeProducers, idempotent and transactional Produce
// (00_produce.go, idempotence.go), FindCoordinator and OffsetFetch, and
// JoinGroup (groups.go). Each input must
// be answered without a panic, within fuzzHang, allocating no more than its
// size justifies, and with a body that kmsg decodes as the response to that
// key and version (and re-encodes byte for byte). Seeds are valid requests
// made with kmsg; a few more live in testdata/fuzz.
//
// Each target runs against a real Proxy made by New, changed so that the
// upstream is never reached, although some handlers would: findTxnCoordinator
// asks it for its brokers while none is known, checkBatch asks for the
// partition's end offset on a producer's first batch there, and a decided
// commit is carried out in the background. So the admin client is replaced
// by one that is closed (every request fails at once and nothing is dialled;
// dials are counted anyway), and the idempotent producer table is reopened
// over fuzzBackend, which answers the end-offset question at once, so that
// batches get as far as being cleared for writing.

const (
	// fuzzHang is how long a handler may take before the input counts as
	// a hang.
	fuzzHang = 5 * time.Second
	// fuzzRebuild is how many inputs a worker feeds one Proxy before
	// replacing it, bounding the state (transactional ids, buffered
	// batches, groups) that fuzzing piles up, and the drift of txn-1's
	// state away from what the seeds expect.
	fuzzRebuild = 1000

	fuzzTxnID  = "txn-1"
	fuzzGroup  = "group-1"
	fuzzTopic  = "orders"
	fuzzBroker = int32(1) // the upstream broker id mapped in fuzz proxies
	fuzzIdemID = int64(7000)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// heapAllocated returns the bytes allocated while f runs, by any goroutine.
func heapAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// fuzzBackend stands in for the upstream in the idempotent producer table:
// every partition is empty and holds no batch.
type fuzzBackend struct{}

func (fuzzBackend) EndOffset(context.Context, string, int32) (int64, error) { return 0, nil }
func (fuzzBackend) DropsLateCopies() bool                                   { return true }

func (fuzzBackend) FindBatch(context.Context, string, int32, int64, [32]byte) (int64, bool, error) {
	return 0, false, nil
}

// fuzzEnv is a Proxy with client connections to feed requests to, a
// transaction txn-1 of producer (pid, epoch), open on orders/0 and orders/1
// and holding group-1's offset of orders/0, and an idempotent producer that
// wrote to orders/0.
type fuzzEnv struct {
	brokers bool // whether upstream broker fuzzBroker is known
	p       *Proxy
	// conns are connections to the bootstrap listener (-1), to the
	// listener of the coordinator (fuzzBroker) and to that of another
	// broker.
	conns []*conn
	pid   int64
	epoch int16
	port  int32 // client-facing port of fuzzBroker
	execs int
	dials atomic.Int64
}

func newFuzzEnv(f *testing.F, brokers bool) *fuzzEnv {
	env := &fuzzEnv{brokers: brokers}
	if err := env.build(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(env.close)
	return env
}

func (env *fuzzEnv) build() error {
	noUpstream := func(context.Context, string, string) (net.Conn, error) {
		env.dials.Add(1)
		return nil, errors.New("fuzzing: no upstream")
	}
	upstream := "127.0.0.1:1" // nothing listens there; nothing dials it either
	p, err := New(Config{Listen: "127.0.0.1:0", Upstreams: []string{upstream}, Dial: noUpstream, NoInstanceLease: true, Log: zerolog.Nop()})
	if err != nil {
		return err
	}
	env.p = p
	// No upstream: as a backend without idempotence, idempotent batches
	// are cleared unpaired rather than waiting for a backend producer id.
	p.up.Offline()
	// The coordinator keeps allocating producer ids from the old table,
	// which works closed; the ranges may overlap the new one's, which
	// idempotent and transactional producers do not mind here.
	producers, err := dedup.Open(p.cfg.DB, fuzzBackend{}, p.cfg.ProducerIDExpiration, p.log)
	if err != nil {
		p.Close()
		return err
	}
	p.producers.Close()
	p.producers = producers
	if env.brokers {
		if _, env.port, err = p.mapBroker(fuzzBroker, "127.0.0.1", 1); err != nil {
			p.Close()
			return err
		}
	}
	env.conns = nil
	for _, id := range []int32{-1, fuzzBroker, fuzzBroker + 1} {
		ctx, cancel := context.WithCancel(context.Background())
		env.conns = append(env.conns, &conn{
			p: p, brokerID: id, log: zerolog.Nop(), ctx: ctx, cancel: cancel,
			uw: bufio.NewWriter(io.Discard), // checkBatch flushes it
		})
	}
	if err := env.openTxn(); err != nil {
		env.close()
		return err
	}
	return nil
}

// openTxn starts txn-1 through the handlers under test.
func (env *fuzzEnv) openTxn() error {
	c := env.conns[0]
	init := kmsg.NewPtrInitProducerIDRequest()
	init.SetVersion(4)
	init.TransactionalID = kmsg.StringPtr(fuzzTxnID)
	init.TransactionTimeoutMillis = 60000
	out, err := serve(c, protocol.KeyInitProducerID, 4, init.AppendTo(nil))
	if err != nil {
		return err
	}
	resp := kmsg.NewPtrInitProducerIDResponse()
	resp.SetVersion(4)
	if err := resp.ReadFrom(out); err != nil || resp.ErrorCode != 0 {
		return fmt.Errorf("InitProducerId %s: error code %d, %v", fuzzTxnID, resp.ErrorCode, err)
	}
	env.pid, env.epoch = resp.ProducerID, resp.ProducerEpoch
	for _, key := range []int16{protocol.KeyAddPartitionsTxn, protocol.KeyAddOffsetsTxn, protocol.KeyTxnOffsetCommit} {
		req := env.txnRequest(key, 3)
		out, err := serve(c, key, 3, req.AppendTo(nil))
		if err != nil {
			return err
		}
		resp := req.ResponseKind()
		if err := resp.ReadFrom(out); err != nil {
			return err
		}
		if codes := errorCodes(resp); slices.ContainsFunc(codes, func(c int16) bool { return c != 0 }) {
			return fmt.Errorf("%s for %s: error codes %v", kmsg.NameForKey(key), fuzzTxnID, codes)
		}
	}
	if !env.p.coord.AnyOffsetsPending() {
		return errors.New("no pending offsets after TxnOffsetCommit")
	}
	return env.writeIdempotent(c)
}

// writeIdempotent has an idempotent producer write to orders/0, for
// DescribeProducers to list.
func (env *fuzzEnv) writeIdempotent(c *conn) error {
	frame := requestFrame(protocol.KeyProduce, 9, produceBody(9, nil, -1, producerBatch(fuzzIdemID-1, 0, 0, false, "setup")))
	hdr, err := protocol.ParseRequestHeader(frame)
	if err != nil {
		return err
	}
	plan, _, err := c.planProduce(c.ctx, frame, hdr)
	if err != nil || plan == nil || len(plan.tokens) != 1 {
		return fmt.Errorf("idempotent Produce not cleared for writing: %v", err)
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(9)
	rt := kmsg.NewProduceResponseTopic()
	rt.Topic = fuzzTopic
	rt.Partitions = append(rt.Partitions, kmsg.NewProduceResponseTopicPartition())
	resp.Topics = append(resp.Topics, rt)
	_, err = c.answerProduce(plan, 9, resp.AppendTo(nil))
	return err
}

func errorCodes(resp kmsg.Response) []int16 {
	switch r := resp.(type) {
	case *kmsg.AddPartitionsToTxnResponse:
		var codes []int16
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				codes = append(codes, p.ErrorCode)
			}
		}
		return codes
	case *kmsg.AddOffsetsToTxnResponse:
		return []int16{r.ErrorCode}
	case *kmsg.TxnOffsetCommitResponse:
		var codes []int16
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				codes = append(codes, p.ErrorCode)
			}
		}
		return codes
	}
	return nil
}

func (env *fuzzEnv) close() {
	for _, c := range env.conns {
		c.cancel()
	}
	env.p.Close()
}

// next counts an input and replaces the Proxy every fuzzRebuild inputs.
func (env *fuzzEnv) next(t *testing.T) {
	env.execs++
	if env.execs%fuzzRebuild != 0 {
		return
	}
	env.close()
	if err := env.build(); err != nil {
		t.Fatal(err)
	}
}

// exercise runs one input's handler call and checks: it returns within
// fuzzHang, it allocates at most 1 MiB + 1 KiB per input byte, and nothing
// dialled the upstream.
//
// The allocation count is the process's, and other goroutines allocate too:
// above all badger, whose in-memory memtable, when full, is replaced within
// the write that filled it by a new arena (some 10 MiB) and flushed in the
// background.
// An input over the bound is therefore run again, after pauses that let a
// flush finish, and fails only if it is over every time.
func (env *fuzzEnv) exercise(t *testing.T, size int, what func() string, run func()) {
	t.Helper()
	limit := uint64(1<<20) + 1024*uint64(size)
	var seen []uint64
	for _, pause := range []time.Duration{0, 0, 50 * time.Millisecond, 500 * time.Millisecond} {
		time.Sleep(pause)
		n := guarded(what, run)
		if n <= limit {
			break
		}
		if seen = append(seen, n); len(seen) == 4 {
			t.Fatalf("%s: allocated %v bytes in successive runs for %d bytes of input", what(), seen, size)
		}
	}
	if n := env.dials.Load(); n != 0 {
		t.Fatalf("%s: %d dials toward the upstream", what(), n)
	}
}

func guarded(what func() string, run func()) uint64 {
	timer := time.AfterFunc(fuzzHang, func() {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		panic(fmt.Sprintf("%s: no answer within %v\n\n%s", what(), fuzzHang, buf))
	})
	defer timer.Stop()
	return heapAllocated(run)
}

// serve runs key's routed handler on a request with body, as readLoop does,
// and returns the answer eosproxy gives itself (nil: the request goes
// upstream).
func serve(c *conn, key, version int16, body []byte) ([]byte, error) {
	frame := requestFrame(key, version, body)
	hdr, err := protocol.ParseRequestHeader(frame)
	if err != nil {
		return nil, err
	}
	r := request{hdr: hdr, frame: frame, slot: slot{corr: hdr.CorrelationID, key: key, ver: version}}
	if err := route(key)(c, &r); err != nil || !r.slot.local {
		return nil, err
	}
	return r.slot.body, nil
}

// requestFrame is a request as readLoop reads it: header, then body.
func requestFrame(key, version int16, body []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, 7)
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, "fuzz"...)
	if flexible, _ := protocol.RequestIsFlexible(key, version); flexible {
		b = append(b, 0)
	}
	return append(b, body...)
}

// clip maps a fuzzed version into 0..top.
func clip(version, top int16) int16 { return int16(uint16(version) % uint16(top+1)) }

// checkAnswer checks a handler's outcome for a request body: a body kmsg
// cannot decode must be refused as a bad request (closing the connection,
// as Kafka does), and any other answered with a body that decodes as the
// response for the request's key and version and re-encodes to the same
// bytes. It returns the decoded request and response (nil when refused).
func checkAnswer(t *testing.T, key, version int16, body, out []byte, err error) (kmsg.Request, kmsg.Response) {
	t.Helper()
	req := kmsg.RequestForKey(key)
	req.SetVersion(version)
	if decErr := req.ReadFrom(body); decErr != nil {
		if err == nil || !errors.As(err, new(*badRequest)) || out != nil {
			t.Fatalf("%s v%d: kmsg cannot decode the request (%v), handler answered %x, %v", kmsg.NameForKey(key), version, decErr, out, err)
		}
		return nil, nil
	}
	if err != nil {
		t.Fatalf("%s v%d: kmsg decodes the request, handler refused it: %v", kmsg.NameForKey(key), version, err)
	}
	return req, checkResponse(t, key, version, out)
}

// checkResponse decodes a response body made by eosproxy.
func checkResponse(t *testing.T, key, version int16, out []byte) kmsg.Response {
	t.Helper()
	resp := kmsg.ResponseForKey(key)
	resp.SetVersion(version)
	if err := resp.ReadFrom(out); err != nil {
		t.Fatalf("%s v%d: answer does not decode: %v\n%x", kmsg.NameForKey(key), version, err, out)
	}
	if again := resp.AppendTo(nil); !bytes.Equal(again, out) {
		t.Fatalf("%s v%d: answer re-encodes differently:\n%x\n%x", kmsg.NameForKey(key), version, out, again)
	}
	return resp
}

// txnKeys are the transaction coordinator's keys, in the order of the fuzzed
// selector.
var txnKeys = []int16{protocol.KeyAddPartitionsTxn, protocol.KeyAddOffsetsTxn, protocol.KeyEndTxn,
	protocol.KeyTxnOffsetCommit, protocol.KeyDescribeTxns, protocol.KeyListTxns}

// txnRequest is a valid request of key for txn-1 at version v.
func (env *fuzzEnv) txnRequest(key, v int16) kmsg.Request {
	var req kmsg.Request
	switch key {
	case protocol.KeyAddPartitionsTxn:
		r := kmsg.NewPtrAddPartitionsToTxnRequest()
		r.TransactionalID, r.ProducerID, r.ProducerEpoch = fuzzTxnID, env.pid, env.epoch
		t := kmsg.NewAddPartitionsToTxnRequestTopic()
		t.Topic, t.Partitions = fuzzTopic, []int32{0, 1}
		r.Topics = append(r.Topics, t)
		req = r
	case protocol.KeyAddOffsetsTxn:
		r := kmsg.NewPtrAddOffsetsToTxnRequest()
		r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Group = fuzzTxnID, env.pid, env.epoch, fuzzGroup
		req = r
	case protocol.KeyEndTxn:
		r := kmsg.NewPtrEndTxnRequest()
		r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Commit = fuzzTxnID, env.pid, env.epoch, false
		req = r
	case protocol.KeyTxnOffsetCommit:
		r := kmsg.NewPtrTxnOffsetCommitRequest()
		r.TransactionalID, r.Group, r.ProducerID, r.ProducerEpoch = fuzzTxnID, fuzzGroup, env.pid, env.epoch
		r.Generation, r.MemberID = -1, ""
		t := kmsg.NewTxnOffsetCommitRequestTopic()
		t.Topic = fuzzTopic
		p := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		p.Partition, p.Offset, p.LeaderEpoch, p.Metadata = 0, 42, -1, kmsg.StringPtr("md")
		t.Partitions = append(t.Partitions, p)
		r.Topics = append(r.Topics, t)
		req = r
	case protocol.KeyDescribeTxns:
		r := kmsg.NewPtrDescribeTransactionsRequest()
		r.TransactionalIDs = []string{fuzzTxnID, "txn-unknown"}
		req = r
	case protocol.KeyListTxns:
		r := kmsg.NewPtrListTransactionsRequest()
		r.StateFilters = []string{"Ongoing", "NoSuchState"}
		r.ProducerIDFilters = []int64{env.pid}
		r.TransactionalIDPattern = kmsg.StringPtr("^txn-")
		req = r
	}
	req.SetVersion(v)
	return req
}

func FuzzAnswerTxn(f *testing.F) {
	env := newFuzzEnv(f, true)
	for i, key := range txnKeys {
		for v := int16(0); v <= protocol.MaxProxyVersion(key); v++ {
			f.Add(uint8(i), v, env.txnRequest(key, v).AppendTo(nil))
		}
	}
	// ListTransactions on the coordinator's listener and another broker's.
	list := uint8(slices.Index(txnKeys, protocol.KeyListTxns))
	f.Add(list+uint8(len(txnKeys)), int16(2), env.txnRequest(protocol.KeyListTxns, 2).AppendTo(nil))
	f.Add(list+2*uint8(len(txnKeys)), int16(2), env.txnRequest(protocol.KeyListTxns, 2).AppendTo(nil))
	f.Add(uint8(2), int16(4), append(env.txnRequest(protocol.KeyEndTxn, 4).AppendTo(nil)[:9], 0xff))
	f.Fuzz(func(t *testing.T, sel uint8, version int16, body []byte) {
		env.next(t)
		key := txnKeys[int(sel)%len(txnKeys)]
		c := env.conns[int(sel)/len(txnKeys)%len(env.conns)]
		v := clip(version, protocol.MaxProxyVersion(key))
		what := func() string { return fmt.Sprintf("%s v%d (broker %d)", kmsg.NameForKey(key), v, c.brokerID) }
		env.exercise(t, len(body), what, func() {
			out, err := serve(c, key, v, body)
			req, resp := checkAnswer(t, key, v, body, out, err)
			if req != nil {
				checkTxnAnswer(t, c, req, resp)
			}
		})
	})
}

// checkTxnAnswer checks that an answer covers what the request asked about.
func checkTxnAnswer(t *testing.T, c *conn, req kmsg.Request, resp kmsg.Response) {
	t.Helper()
	switch r := req.(type) {
	case *kmsg.AddPartitionsToTxnRequest:
		rr := resp.(*kmsg.AddPartitionsToTxnResponse)
		if len(rr.Topics) != len(r.Topics) {
			t.Fatalf("AddPartitionsToTxn: %d topics answered for %d", len(rr.Topics), len(r.Topics))
		}
		for i, tp := range r.Topics {
			got := rr.Topics[i]
			if got.Topic != tp.Topic || len(got.Partitions) != len(tp.Partitions) {
				t.Fatalf("AddPartitionsToTxn: topic %d answered as %q/%d partitions, asked %q/%d", i, got.Topic, len(got.Partitions), tp.Topic, len(tp.Partitions))
			}
			for j, p := range tp.Partitions {
				if got.Partitions[j].Partition != p {
					t.Fatalf("AddPartitionsToTxn: %s partition %d answered as %d", tp.Topic, p, got.Partitions[j].Partition)
				}
			}
		}
	case *kmsg.TxnOffsetCommitRequest:
		rr := resp.(*kmsg.TxnOffsetCommitResponse)
		if len(rr.Topics) != len(r.Topics) {
			t.Fatalf("TxnOffsetCommit: %d topics answered for %d", len(rr.Topics), len(r.Topics))
		}
		for i, tp := range r.Topics {
			got := rr.Topics[i]
			if got.Topic != tp.Topic || len(got.Partitions) != len(tp.Partitions) {
				t.Fatalf("TxnOffsetCommit: topic %d answered as %q/%d partitions, asked %q/%d", i, got.Topic, len(got.Partitions), tp.Topic, len(tp.Partitions))
			}
			for j, p := range tp.Partitions {
				if got.Partitions[j].Partition != p.Partition {
					t.Fatalf("TxnOffsetCommit: %s partition %d answered as %d", tp.Topic, p.Partition, got.Partitions[j].Partition)
				}
			}
		}
	case *kmsg.DescribeTransactionsRequest:
		rr := resp.(*kmsg.DescribeTransactionsResponse)
		if len(rr.TransactionStates) != len(r.TransactionalIDs) {
			t.Fatalf("DescribeTransactions: %d states for %d ids", len(rr.TransactionStates), len(r.TransactionalIDs))
		}
		for i, id := range r.TransactionalIDs {
			if got := rr.TransactionStates[i].TransactionalID; got != id {
				t.Fatalf("DescribeTransactions: id %d answered as %q, asked %q", i, got, id)
			}
		}
	case *kmsg.ListTransactionsRequest:
		rr := resp.(*kmsg.ListTransactionsResponse)
		asked := map[string]bool{}
		for _, s := range r.StateFilters {
			asked[s] = true
		}
		for _, s := range rr.UnknownStateFilters {
			if !asked[s] {
				t.Fatalf("ListTransactions: unknown state filter %q was not asked for", s)
			}
		}
		if c.brokerID != -1 && c.brokerID != fuzzBroker && len(rr.TransactionStates) > 0 {
			t.Fatalf("ListTransactions: broker %d is not the coordinator but listed %d transactions", c.brokerID, len(rr.TransactionStates))
		}
	}
}

// localKeys are the other keys eosproxy answers itself.
var localKeys = []int16{protocol.KeyInitProducerID, protocol.KeyDescribeProducers}

func localRequest(key, v int16, txnID *string) kmsg.Request {
	var req kmsg.Request
	switch key {
	case protocol.KeyInitProducerID:
		r := kmsg.NewPtrInitProducerIDRequest()
		r.TransactionalID, r.TransactionTimeoutMillis = txnID, 60000
		req = r
	case protocol.KeyDescribeProducers:
		r := kmsg.NewPtrDescribeProducersRequest()
		t := kmsg.NewDescribeProducersRequestTopic()
		t.Topic, t.Partitions = fuzzTopic, []int32{0, 1}
		r.Topics = append(r.Topics, t)
		req = r
	}
	req.SetVersion(v)
	return req
}

func FuzzAnswerLocally(f *testing.F) {
	env := newFuzzEnv(f, true)
	for i, key := range localKeys {
		for v := int16(0); v <= protocol.MaxProxyVersion(key); v++ {
			f.Add(uint8(i), v, localRequest(key, v, nil).AppendTo(nil))
			if key == protocol.KeyInitProducerID {
				f.Add(uint8(i), v, localRequest(key, v, kmsg.StringPtr(fuzzTxnID)).AppendTo(nil))
				f.Add(uint8(i), v, localRequest(key, v, kmsg.StringPtr("txn-2")).AppendTo(nil))
			}
		}
	}
	// KIP-360: a producer naming its current id and epoch.
	resume := localRequest(protocol.KeyInitProducerID, 4, kmsg.StringPtr(fuzzTxnID)).(*kmsg.InitProducerIDRequest)
	resume.ProducerID, resume.ProducerEpoch = env.pid, env.epoch
	f.Add(uint8(0), int16(4), resume.AppendTo(nil))
	f.Fuzz(func(t *testing.T, sel uint8, version int16, body []byte) {
		env.next(t)
		key := localKeys[int(sel)%len(localKeys)]
		v := clip(version, protocol.MaxProxyVersion(key))
		c := env.conns[0]
		what := func() string { return fmt.Sprintf("%s v%d", kmsg.NameForKey(key), v) }
		env.exercise(t, len(body), what, func() {
			out, err := serve(c, key, v, body)
			req, resp := checkAnswer(t, key, v, body, out, err)
			switch r := req.(type) {
			case *kmsg.InitProducerIDRequest:
				rr := resp.(*kmsg.InitProducerIDResponse)
				if r.TransactionalID == nil && (rr.ErrorCode != 0 || rr.ProducerID < 0 || rr.ProducerEpoch != 0) {
					t.Fatalf("idempotent InitProducerId answered %d, id %d, epoch %d", rr.ErrorCode, rr.ProducerID, rr.ProducerEpoch)
				}
			case *kmsg.DescribeProducersRequest:
				rr := resp.(*kmsg.DescribeProducersResponse)
				if len(rr.Topics) != len(r.Topics) {
					t.Fatalf("DescribeProducers: %d topics answered for %d", len(rr.Topics), len(r.Topics))
				}
				for i, tp := range r.Topics {
					if got := rr.Topics[i]; got.Topic != tp.Topic || len(got.Partitions) != len(tp.Partitions) {
						t.Fatalf("DescribeProducers: topic %d answered as %q/%d, asked %q/%d", i, got.Topic, len(got.Partitions), tp.Topic, len(tp.Partitions))
					}
				}
			}
		})
	})
}

func findCoordinatorRequest(v int16, typ int8) []byte {
	r := kmsg.NewPtrFindCoordinatorRequest()
	r.SetVersion(v)
	r.CoordinatorType = typ
	r.CoordinatorKey = fuzzTxnID
	if typ == 0 {
		r.CoordinatorKey = fuzzGroup
	}
	r.CoordinatorKeys = []string{r.CoordinatorKey, "other"}
	return r.AppendTo(nil)
}

func FuzzFindTxnCoordinator(f *testing.F) {
	// With the upstream's brokers known, and not: then eosproxy asks the
	// upstream (failing at once here) and answers COORDINATOR_NOT_AVAILABLE.
	envs := []*fuzzEnv{newFuzzEnv(f, false), newFuzzEnv(f, true)}
	for v := int16(0); v <= protocol.MaxProxyVersion(protocol.KeyFindCoordinator); v++ {
		for _, known := range []bool{false, true} {
			f.Add(known, v, findCoordinatorRequest(v, coordinatorTypeTxn))
		}
		f.Add(true, v, findCoordinatorRequest(v, 0))
	}
	f.Fuzz(func(t *testing.T, known bool, version int16, body []byte) {
		env := envs[0]
		if known {
			env = envs[1]
		}
		env.next(t)
		v := clip(version, protocol.MaxProxyVersion(protocol.KeyFindCoordinator))
		what := func() string { return fmt.Sprintf("FindCoordinator v%d (brokers known: %v)", v, known) }
		env.exercise(t, len(body), what, func() {
			hdr := protocol.RequestHeader{APIKey: protocol.KeyFindCoordinator, APIVersion: v}
			out, err := env.p.findTxnCoordinator(env.conns[0].ctx, hdr, body, func(string) bool { return true })
			req := kmsg.NewPtrFindCoordinatorRequest()
			req.SetVersion(v)
			if req.ReadFrom(body) == nil && req.CoordinatorType != coordinatorTypeTxn {
				if out != nil || err != nil {
					t.Fatalf("FindCoordinator type %d: answered %x, %v; it should pass", req.CoordinatorType, out, err)
				}
				return
			}
			if _, resp := checkAnswer(t, protocol.KeyFindCoordinator, v, body, out, err); resp != nil {
				checkCoordinator(t, env, req, resp.(*kmsg.FindCoordinatorResponse))
			}
		})
	})
}

func checkCoordinator(t *testing.T, env *fuzzEnv, req *kmsg.FindCoordinatorRequest, resp *kmsg.FindCoordinatorResponse) {
	t.Helper()
	code, node, port := kerr.CoordinatorNotAvailable.Code, int32(-1), int32(0)
	if env.brokers {
		code, node, port = 0, fuzzBroker, env.port
	}
	type answer struct {
		code       int16
		node, port int32
		host       string
	}
	want := answer{code, node, port, env.p.advHost}
	if req.Version < 4 {
		if got := (answer{resp.ErrorCode, resp.NodeID, resp.Port, resp.Host}); got != want {
			t.Fatalf("FindCoordinator v%d: answered %+v, want %+v", req.Version, got, want)
		}
		return
	}
	if len(resp.Coordinators) != len(req.CoordinatorKeys) {
		t.Fatalf("FindCoordinator v%d: %d coordinators for %d keys", req.Version, len(resp.Coordinators), len(req.CoordinatorKeys))
	}
	for i, co := range resp.Coordinators {
		if got := (answer{co.ErrorCode, co.NodeID, co.Port, co.Host}); co.Key != req.CoordinatorKeys[i] || got != want {
			t.Fatalf("FindCoordinator v%d: key %q answered as %q %+v, want %+v", req.Version, req.CoordinatorKeys[i], co.Key, got, want)
		}
	}
}

func offsetFetchRequest(v int16, topics bool) []byte {
	r := kmsg.NewPtrOffsetFetchRequest()
	r.SetVersion(v)
	r.RequireStable = true
	r.Group = fuzzGroup
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = fuzzGroup
	if topics {
		t := kmsg.NewOffsetFetchRequestTopic()
		t.Topic, t.Partitions = fuzzTopic, []int32{0, 1}
		r.Topics = append(r.Topics, t)
		gt := kmsg.NewOffsetFetchRequestGroupTopic()
		gt.Topic, gt.Partitions = fuzzTopic, []int32{1, 0}
		g.Topics = append(g.Topics, gt)
	}
	other := kmsg.NewOffsetFetchRequestGroup()
	other.Group = "group-2"
	r.Groups = append(r.Groups, g, other)
	return r.AppendTo(nil)
}

func FuzzUnstableOffsets(f *testing.F) {
	env := newFuzzEnv(f, true)
	for v := int16(0); v <= protocol.MaxProxyVersion(protocol.KeyOffsetFetch); v++ {
		f.Add(v, offsetFetchRequest(v, true))
		f.Add(v, offsetFetchRequest(v, false))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		env.next(t)
		v := clip(version, protocol.MaxProxyVersion(protocol.KeyOffsetFetch))
		what := func() string { return fmt.Sprintf("OffsetFetch v%d", v) }
		env.exercise(t, len(body), what, func() {
			// readLoop asks only while offsets are pending, as txn-1's are.
			if !env.p.coord.AnyOffsetsPending() {
				t.Fatal("no offsets pending")
			}
			hdr := protocol.RequestHeader{APIKey: protocol.KeyOffsetFetch, APIVersion: v}
			out := env.p.unstableOffsets(hdr, body)
			req := kmsg.NewPtrOffsetFetchRequest()
			req.SetVersion(v)
			if req.ReadFrom(body) != nil || !req.RequireStable {
				if out != nil {
					t.Fatalf("OffsetFetch v%d answered locally without RequireStable: %x", v, out)
				}
				return
			}
			if out == nil {
				checkNothingPending(t, env, req)
				return
			}
			checkUnstable(t, req, checkResponse(t, protocol.KeyOffsetFetch, v, out).(*kmsg.OffsetFetchResponse))
		})
	})
}

// checkNothingPending checks that a request passed to the backend asks for
// no offset a transaction holds.
func checkNothingPending(t *testing.T, env *fuzzEnv, req *kmsg.OffsetFetchRequest) {
	t.Helper()
	pending := func(group, topic string, parts []int32, all bool) {
		if all && env.p.coord.OffsetsPending(group, nil) {
			t.Fatalf("OffsetFetch v%d for all of %q passed while offsets are pending", req.Version, group)
		}
		for _, p := range parts {
			if env.p.coord.OffsetsPending(group, &txnstate.TopicPartition{Topic: topic, Partition: p}) {
				t.Fatalf("OffsetFetch v%d for %q %s/%d passed while it is pending", req.Version, group, topic, p)
			}
		}
	}
	if req.Version < 8 {
		pending(req.Group, "", nil, req.Topics == nil)
		for _, tp := range req.Topics {
			pending(req.Group, tp.Topic, tp.Partitions, false)
		}
		return
	}
	for _, g := range req.Groups {
		pending(g.Group, "", nil, g.Topics == nil)
		for _, tp := range g.Topics {
			pending(g.Group, tp.Topic, tp.Partitions, false)
		}
	}
}

// checkUnstable checks a local answer: UNSTABLE_OFFSET_COMMIT throughout,
// for every group asked about.
func checkUnstable(t *testing.T, req *kmsg.OffsetFetchRequest, resp *kmsg.OffsetFetchResponse) {
	t.Helper()
	check := func(code int16) {
		if code != kerr.UnstableOffsetCommit.Code {
			t.Fatalf("OffsetFetch v%d answered locally with error code %d", req.Version, code)
		}
	}
	if req.Version < 8 {
		for _, tp := range resp.Topics {
			for _, p := range tp.Partitions {
				check(p.ErrorCode)
			}
		}
		return
	}
	if len(resp.Groups) != len(req.Groups) {
		t.Fatalf("OffsetFetch v%d: %d groups answered for %d", req.Version, len(resp.Groups), len(req.Groups))
	}
	for i, g := range resp.Groups {
		if g.Group != req.Groups[i].Group {
			t.Fatalf("OffsetFetch v%d: group %d answered as %q, asked %q", req.Version, i, g.Group, req.Groups[i].Group)
		}
		for _, tp := range g.Topics {
			for _, p := range tp.Partitions {
				check(p.ErrorCode)
			}
		}
	}
}

// oneRecordBatch encodes a valid magic-2 record batch holding value
// (integration/helpers_test.go has the same).
func oneRecordBatch(value string) []byte {
	rec := kmsg.Record{Value: []byte(value)}
	recBytes := rec.AppendTo(nil)
	rec.Length = int32(len(recBytes) - len(binary.AppendVarint(nil, 0)))
	recBytes = rec.AppendTo(nil)
	b := kmsg.RecordBatch{
		Magic:         2,
		ProducerID:    -1,
		ProducerEpoch: -1,
		FirstSequence: -1,
		NumRecords:    1,
		Records:       recBytes,
	}
	raw := b.AppendTo(nil)
	b.Length = int32(len(raw) - 12)
	raw = b.AppendTo(nil)
	fixCRC(raw)
	return raw
}

// producerBatch is a one-record batch from producer pid; transactional if
// txn is set.
func producerBatch(pid int64, epoch int16, seq int32, txn bool, value string) []byte {
	raw := oneRecordBatch(value)
	binary.BigEndian.PutUint64(raw[43:], uint64(pid))
	binary.BigEndian.PutUint16(raw[51:], uint16(epoch))
	binary.BigEndian.PutUint32(raw[53:], uint32(seq))
	if txn {
		raw[22] |= 0x10 // attributes: transactional
	}
	fixCRC(raw)
	return raw
}

// fixCRC recomputes the CRC-32C of the batch at the start of b, if its
// length field fits in b.
func fixCRC(b []byte) {
	if len(b) < protocol.BatchHeaderLen {
		return
	}
	n := int(int32(binary.BigEndian.Uint32(b[8:]))) + 12
	if n < protocol.BatchHeaderLen || n > len(b) {
		return
	}
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:n], castagnoli))
}

// produceBody is a Produce request body of version v with one batch per
// partition of orders.
func produceBody(v int16, txnID *string, acks int16, batches ...[]byte) []byte {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(v)
	req.TransactionID, req.Acks, req.TimeoutMillis = txnID, acks, 5000
	t := kmsg.NewProduceRequestTopic()
	t.Topic = fuzzTopic
	for i, b := range batches {
		p := kmsg.NewProduceRequestTopicPartition()
		p.Partition, p.Records = int32(i), b
		t.Partitions = append(t.Partitions, p)
	}
	req.Topics = append(req.Topics, t)
	return req.AppendTo(nil)
}

// upstreamCodes are the error codes a fuzzed upstream answers forwarded
// batches with: none, and ones after which a batch's fate is unknown or
// known not written.
var upstreamCodes = []int16{0, 0, 0, 7, 6, -1, 56, 10}

func FuzzProduce(f *testing.F) {
	env := newFuzzEnv(f, true)
	maxV := protocol.MaxProxyVersion(protocol.KeyProduce)
	txn := kmsg.StringPtr(fuzzTxnID)
	for v := int16(0); v <= maxV; v++ {
		f.Add(v, uint8(0), produceBody(v, nil, -1, oneRecordBatch("plain")))
		f.Add(v, uint8(0), produceBody(v, nil, -1,
			producerBatch(fuzzIdemID, 0, 0, false, "a"), producerBatch(fuzzIdemID, 0, 0, false, "b")))
		if v >= 3 {
			f.Add(v, uint8(0), produceBody(v, txn, -1,
				producerBatch(env.pid, env.epoch, 0, true, "t0"), producerBatch(env.pid, env.epoch, 0, true, "t1")))
		}
	}
	// acks=1 and acks=0; a corrupt batch beside a good one; two batches for
	// one partition; a transactional Produce with acks=1; an unknown
	// transactional id; a transactional Produce with a batch that is not,
	// a corrupt one and none; one partition named twice; upstreams refusing forwarded batches with
	// REQUEST_TIMED_OUT (fate unknown) and NOT_LEADER (not written).
	f.Add(maxV, uint8(0), produceBody(maxV, nil, 1, producerBatch(fuzzIdemID+1, 0, 0, false, "x")))
	f.Add(maxV, uint8(0), produceBody(maxV, nil, 0, producerBatch(fuzzIdemID+1, 0, 0, false, "x")))
	corrupt := producerBatch(fuzzIdemID+2, 0, 0, false, "x")
	corrupt[len(corrupt)-1] ^= 1
	f.Add(maxV, uint8(0), produceBody(maxV, nil, -1, producerBatch(fuzzIdemID+2, 0, 0, false, "y"), corrupt))
	f.Add(maxV, uint8(1), produceBody(maxV, nil, -1, corrupt))
	f.Add(maxV, uint8(0), produceBody(maxV, nil, -1, append(producerBatch(fuzzIdemID+3, 0, 0, false, "a"), producerBatch(fuzzIdemID+3, 0, 1, false, "b")...)))
	f.Add(maxV, uint8(0), produceBody(maxV, txn, 1, producerBatch(env.pid, env.epoch, 0, true, "t")))
	f.Add(maxV, uint8(0), produceBody(maxV, kmsg.StringPtr("txn-unknown"), -1, producerBatch(env.pid, env.epoch, 0, true, "t")))
	f.Add(maxV, uint8(0), produceBody(maxV, txn, -1, oneRecordBatch("plain"), corrupt, nil))
	twice := kmsg.NewPtrProduceRequest()
	twice.SetVersion(maxV)
	twice.Acks = -1
	if err := twice.ReadFrom(produceBody(maxV, nil, -1, producerBatch(fuzzIdemID+6, 0, 0, false, "once"))); err != nil {
		f.Fatal(err)
	}
	twice.Topics = append(twice.Topics, twice.Topics[0]) // refused, after the first was cleared
	f.Add(maxV, uint8(0), twice.AppendTo(nil))
	f.Add(maxV, uint8(3<<1), produceBody(maxV, nil, -1, producerBatch(fuzzIdemID+4, 0, 0, false, "timeout")))
	f.Add(maxV, uint8(4<<1), produceBody(maxV, nil, -1, producerBatch(fuzzIdemID+5, 0, 0, false, "not leader")))
	f.Fuzz(func(t *testing.T, version int16, mode uint8, body []byte) {
		env.next(t)
		v := clip(version, maxV)
		c := env.conns[1]
		what := func() string { return fmt.Sprintf("Produce v%d (mode %#x)", v, mode) }
		frame := requestFrame(protocol.KeyProduce, v, body)
		hdr, err := protocol.ParseRequestHeader(frame)
		if err != nil || hdr.BodyOffset < 0 {
			t.Fatalf("request header: %v", err)
		}
		if mode&1 != 0 {
			// Let the fuzzer vary batch headers past the CRC check.
			req := kmsg.NewPtrProduceRequest()
			req.SetVersion(v)
			if req.ReadFrom(frame[hdr.BodyOffset:]) == nil {
				for _, tp := range req.Topics {
					for _, p := range tp.Partitions {
						fixCRC(p.Records) // in frame: kmsg does not copy records
					}
				}
			}
		}
		upCode := upstreamCodes[int(mode>>1)%len(upstreamCodes)]
		env.exercise(t, len(body), what, func() {
			runProduce(t, c, v, upCode, slices.Clone(frame), hdr)
		})
	})
}

// runProduce feeds a Produce frame to conn.produce as readLoop does, and
// completes what it started: the transactional answer is waited for, a
// forwarded request is answered by an upstream that accepts every batch (or
// refuses each with upCode).
func runProduce(t *testing.T, c *conn, v, upCode int16, frame []byte, hdr protocol.RequestHeader) {
	t.Helper()
	orig := slices.Clone(frame)
	body := orig[hdr.BodyOffset:]
	acks, err := protocol.ProduceAcks(v, body)
	if err != nil {
		return // readLoop closes the connection
	}
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(v)
	decErr := req.ReadFrom(body)
	s := slot{corr: hdr.CorrelationID, key: hdr.APIKey, ver: hdr.APIVersion}
	fwd, err := c.produce(&s, frame, hdr, acks)
	plan, _ := s.answer.(*producePlan)
	switch {
	case err != nil: // readLoop returns it, whatever else produce gave
		if !errors.As(err, new(*badRequest)) || s.answer != nil || s.local {
			t.Fatalf("Produce v%d: error %v with slot %+v", v, err, s)
		}
		if decErr == nil && !hasDuplicatePartition(req) && (!protocol.ProduceIsTransactional(v, body) || acks == -1) {
			t.Fatalf("Produce v%d: kmsg decodes it, eosproxy refused it: %v", v, err)
		}
	case decErr != nil && (s.local || s.answer != nil):
		t.Fatalf("Produce v%d: kmsg cannot decode it (%v), eosproxy answered it (slot %+v)", v, decErr, s)
	case s.local:
		if fwd != nil || s.answer != nil {
			t.Fatalf("Produce v%d answered locally, yet %d bytes to forward", v, len(fwd))
		}
		out := s.body
		if s.wait != nil {
			if !protocol.ProduceIsTransactional(v, body) || acks != -1 {
				t.Fatalf("Produce v%d (acks %d) buffered, yet not transactional", v, acks)
			}
			out = s.wait()
		}
		checkProduceAnswer(t, req, out)
	case plan != nil:
		checkForwarded(t, c, req, plan, fwd, upCode)
	case s.answer == nil:
		if !bytes.Equal(fwd, orig) {
			t.Fatalf("Produce v%d passes through changed", v)
		}
	default:
		t.Fatalf("Produce v%d: slot %+v", v, s)
	}
}

func hasDuplicatePartition(req *kmsg.ProduceRequest) bool {
	seen := map[txnstate.TopicPartition]bool{}
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			k := txnstate.TopicPartition{Topic: t.Topic, Partition: p.Partition}
			if seen[k] {
				return true
			}
			seen[k] = true
		}
	}
	return false
}

// checkForwarded checks a request that goes upstream, answers it as the
// upstream would and checks the answer the client gets.
func checkForwarded(t *testing.T, c *conn, req *kmsg.ProduceRequest, plan *producePlan, fwd []byte, upCode int16) {
	t.Helper()
	v := req.Version
	if plan == nil || !plan.forward {
		t.Fatalf("Produce v%d forwarded without a plan", v)
	}
	hdr, err := protocol.ParseRequestHeader(fwd)
	if err != nil || hdr.APIKey != protocol.KeyProduce || hdr.APIVersion != v {
		t.Fatalf("Produce v%d: forwarded header %+v, %v", v, hdr, err)
	}
	sent := kmsg.NewPtrProduceRequest()
	sent.SetVersion(v)
	if err := sent.ReadFrom(fwd[hdr.BodyOffset:]); err != nil {
		t.Fatalf("Produce v%d: forwarded request does not decode: %v", v, err)
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(v)
	offset := int64(100)
	for _, st := range sent.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic, rt.TopicID = st.Topic, st.TopicID
		for _, p := range st.Partitions {
			if tok := plan.tokens[txnstate.TopicPartition{Topic: st.Topic, Partition: p.Partition}]; tok != nil {
				// Cleared for writing: checked, then re-signed without
				// its producer.
				bt, err := protocol.ParseBatch(p.Records)
				if err != nil || bt.ProducerID != -1 || bt.ProducerEpoch != -1 || bt.BaseSequence != -1 {
					t.Fatalf("Produce v%d: %s/%d forwarded as %+v, %v", v, st.Topic, p.Partition, bt, err)
				}
			}
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition, rp.ErrorCode, rp.BaseOffset = p.Partition, upCode, offset
			offset++
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	out, err := c.answerProduce(plan, v, resp.AppendTo(nil))
	if err != nil {
		t.Fatalf("Produce v%d: answer: %v", v, err)
	}
	if plan.tokens != nil {
		t.Fatalf("Produce v%d: %d tokens left after the answer", v, len(plan.tokens))
	}
	checkProduceAnswer(t, req, out)
}

// checkProduceAnswer checks that out answers every partition of req, in
// request order.
func checkProduceAnswer(t *testing.T, req *kmsg.ProduceRequest, out []byte) {
	t.Helper()
	resp := checkResponse(t, protocol.KeyProduce, req.Version, out).(*kmsg.ProduceResponse)
	if len(resp.Topics) != len(req.Topics) {
		t.Fatalf("Produce v%d: %d topics answered for %d", req.Version, len(resp.Topics), len(req.Topics))
	}
	for i, rt := range req.Topics {
		got := resp.Topics[i]
		if got.Topic != rt.Topic || len(got.Partitions) != len(rt.Partitions) {
			t.Fatalf("Produce v%d: topic %d answered as %q/%d partitions, asked %q/%d", req.Version, i, got.Topic, len(got.Partitions), rt.Topic, len(rt.Partitions))
		}
		for j, p := range rt.Partitions {
			if got.Partitions[j].Partition != p.Partition {
				t.Fatalf("Produce v%d: %s partition %d answered as %d", req.Version, rt.Topic, p.Partition, got.Partitions[j].Partition)
			}
		}
	}
}

func joinRequestBody(v int16, instance *string) []byte {
	r := kmsg.NewPtrJoinGroupRequest()
	r.SetVersion(v)
	r.Group, r.SessionTimeoutMillis, r.RebalanceTimeoutMillis = fuzzGroup, 30000, 60000
	r.InstanceID, r.ProtocolType = instance, "consumer"
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", []byte{0, 1, 2}
	r.Protocols = append(r.Protocols, p)
	return r.AppendTo(nil)
}

func joinResponseBody(v int16, code int16, generation int32, member string) []byte {
	r := kmsg.NewPtrJoinGroupResponse()
	r.SetVersion(v)
	r.ErrorCode, r.Generation, r.MemberID, r.LeaderID = code, generation, member, member
	r.Protocol, r.ProtocolType = kmsg.StringPtr("range"), kmsg.StringPtr("consumer")
	m := kmsg.NewJoinGroupResponseMember()
	m.MemberID, m.ProtocolMetadata = member, []byte{0, 1, 2}
	r.Members = append(r.Members, m)
	return r.AppendTo(nil)
}

func FuzzJoinGroup(f *testing.F) {
	env := newFuzzEnv(f, true)
	maxV := protocol.MaxKnownVersion(protocol.KeyJoinGroup)
	for v := int16(0); v <= maxV; v++ {
		f.Add(v, joinRequestBody(v, kmsg.StringPtr("instance-1")), joinResponseBody(v, 0, 5, "member-1"))
		f.Add(v, joinRequestBody(v, nil), joinResponseBody(v, 0, 1, "member-2"))
	}
	f.Add(maxV, joinRequestBody(maxV, nil), joinResponseBody(maxV, 79, -1, "")) // MEMBER_ID_REQUIRED
	f.Add(maxV, joinRequestBody(maxV, nil), joinResponseBody(maxV, 0, math.MaxInt32, "member-3"))
	f.Add(maxV+1, joinRequestBody(maxV, nil), joinResponseBody(maxV, 0, 1, "member-4"))
	f.Fuzz(func(t *testing.T, version int16, reqBody, respBody []byte) {
		env.next(t)
		// One past the newest known version: readLoop passes any JoinGroup
		// to parseJoin, which must leave those alone.
		v := clip(version, maxV+1)
		frame := requestFrame(protocol.KeyJoinGroup, v, reqBody)
		hdr, err := protocol.ParseRequestHeader(frame)
		if err != nil {
			t.Fatalf("request header: %v", err)
		}
		what := func() string { return fmt.Sprintf("JoinGroup v%d", v) }
		env.exercise(t, len(reqBody)+len(respBody), what, func() {
			checkJoin(t, &env.p.groups, v, frame, hdr, reqBody, respBody)
		})
	})
}

// checkJoin runs parseJoin on a request and noteJoin on its answer, and
// checks what the group then remembers: one entry per member, all of one
// generation, and, after a successful answer, the member just joined in the
// answer's generation (the backend's answer is its current generation).
func checkJoin(t *testing.T, g *groupMembers, v int16, frame []byte, hdr protocol.RequestHeader, reqBody, respBody []byte) {
	t.Helper()
	j := parseJoin(hdr, frame)
	req := kmsg.NewPtrJoinGroupRequest()
	req.SetVersion(v)
	decodes := v <= protocol.MaxKnownVersion(protocol.KeyJoinGroup) && req.ReadFrom(reqBody) == nil
	if (j != nil) != decodes {
		t.Fatalf("JoinGroup v%d: parseJoin gave %+v, kmsg decodes: %v", v, j, decodes)
	}
	if j == nil {
		return // readLoop forwards it unobserved
	}
	if j.group != req.Group || (req.InstanceID != nil && j.instance != *req.InstanceID) || (req.InstanceID == nil && j.instance != "") {
		t.Fatalf("JoinGroup v%d: parsed %+v from group %q instance %v", v, j, req.Group, req.InstanceID)
	}
	g.noteJoin(j, v, respBody)
	ms := g.candidates(j.group)
	seen := map[string]bool{}
	for _, m := range ms {
		if seen[m.member] {
			t.Fatalf("JoinGroup v%d: member %q remembered twice: %+v", v, m.member, ms)
		}
		seen[m.member] = true
		if m.generation != ms[0].generation {
			t.Fatalf("JoinGroup v%d: generations %d and %d kept together: %+v", v, m.generation, ms[0].generation, ms)
		}
	}
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.SetVersion(v)
	if resp.ReadFrom(respBody) != nil || resp.ErrorCode != 0 || resp.MemberID == "" || resp.Generation < 0 {
		return
	}
	want := groupMember{generation: resp.Generation, member: resp.MemberID, instance: j.instance}
	if !slices.Contains(ms, want) {
		t.Fatalf("JoinGroup v%d: %+v not remembered: %+v", v, want, ms)
	}
}

// groupKeys are the group requests whose answers eosproxy notes besides
// JoinGroup.
var groupKeys = []kmsg.Key{kmsg.Heartbeat, kmsg.SyncGroup, kmsg.LeaveGroup, kmsg.ConsumerGroupHeartbeat}

func FuzzGroupObservation(f *testing.F) {
	env := newFuzzEnv(f, true)
	for i, k := range groupKeys {
		req := kmsg.RequestForKey(k.Int16())
		v := req.MaxVersion()
		req.SetVersion(v)
		resp := req.ResponseKind()
		resp.SetVersion(v)
		switch r := req.(type) {
		case *kmsg.HeartbeatRequest:
			r.Group, r.MemberID, r.Generation = "g", "member-1", 3
		case *kmsg.SyncGroupRequest:
			r.Group, r.MemberID, r.Generation = "g", "member-1", 3
		case *kmsg.LeaveGroupRequest:
			r.Group = "g"
			r.Members = []kmsg.LeaveGroupRequestMember{{MemberID: "member-1"}}
			resp.(*kmsg.LeaveGroupResponse).Members = []kmsg.LeaveGroupResponseMember{{MemberID: "member-1"}}
		case *kmsg.ConsumerGroupHeartbeatRequest:
			r.Group, r.MemberID, r.MemberEpoch = "g", "member-1", 0
			cr := resp.(*kmsg.ConsumerGroupHeartbeatResponse)
			cr.MemberID, cr.MemberEpoch, cr.HeartbeatIntervalMillis = kmsg.StringPtr("member-1"), 4, 5000
		}
		f.Add(uint8(i), v, req.AppendTo(nil), resp.AppendTo(nil))
	}
	f.Fuzz(func(t *testing.T, which uint8, version int16, reqBody, respBody []byte) {
		env.next(t)
		key := groupKeys[int(which)%len(groupKeys)].Int16()
		v := clip(version, protocol.MaxKnownVersion(key)+1)
		frame := requestFrame(key, v, reqBody)
		hdr, err := protocol.ParseRequestHeader(frame)
		if err != nil {
			t.Fatalf("request header: %v", err)
		}
		what := func() string { return fmt.Sprintf("%s v%d", kmsg.NameForKey(key), v) }
		env.exercise(t, len(reqBody)+len(respBody), what, func() {
			g := &env.p.groups
			obs := g.groupObservation(hdr, frame)
			if obs == nil {
				return
			}
			obs(v, respBody)
			// Whatever was noted, what is remembered stays coherent: one
			// generation per classic group, and a member never both
			// current and gone.
			g.mu.Lock()
			defer g.mu.Unlock()
			for name, view := range g.groups {
				for id, m := range view.members {
					if _, gone := view.gone[id]; gone {
						t.Fatalf("%s: group %q member %q both current and gone", what(), name, id)
					}
					if !view.consumer && m.epoch != view.generation {
						t.Fatalf("%s: group %q member %q in generation %d, the group's is %d", what(), name, id, m.epoch, view.generation)
					}
				}
			}
		})
	})
}
