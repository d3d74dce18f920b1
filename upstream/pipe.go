package upstream

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
	"github.com/eosproxy/eosproxy/txnstate"
)

// pipeProduceVersion caps the Produce version eosproxy's own pipelined
// writes use: v11 is the last one that names topics (v13 wants topic ids)
// and has everything an idempotent, non-transactional write needs.
const pipeProduceVersion = 11

// pipeIdle is how long a pipe may go unused before it is replaced rather
// than used: brokers close idle connections (connections.max.idle.ms, 10
// minutes by default), and a send on a connection the broker has closed
// would fail its whole attempt.
const pipeIdle = 5 * time.Minute

// pipeTimeout is how long a pipelined Produce may go unanswered before the
// connection is given up: the request's own timeout plus slack.
const pipeTimeout = 45 * time.Second

// pipe is one connection of eosproxy's own to a broker, for idempotent
// writes: requests are written in the order they are sent and Kafka answers
// a connection's requests in that order, so several batches of a partition
// can be in flight while the broker still sees them in sequence order.
// kgo cannot promise that order to concurrent callers, hence this small
// client. A failure closes the pipe and fails everything in flight on it.
type pipe struct {
	conn    net.Conn
	version int16
	format  *kmsg.RequestFormatter

	wmu  sync.Mutex // write order
	corr int32
	buf  []byte

	lastUsed atomic.Int64 // unix ms of the last send

	inflight chan *pipeCall
	done     chan struct{}
	once     sync.Once
	err      error
}

type pipeCall struct {
	corr int32
	tps  []txnstate.TopicPartition
	out  chan map[txnstate.TopicPartition]txnstate.ProduceResult
}

// dialPipe connects to broker id and learns its Produce versions.
func dialPipe(ctx context.Context, c *Client, id int32) (*pipe, error) {
	conn, err := c.Dial(id)
	if err != nil {
		return nil, err
	}
	pp := &pipe{conn: conn, format: kmsg.NewRequestFormatter(kmsg.FormatterClientID("eosproxy")),
		inflight: make(chan *pipeCall, 64), done: make(chan struct{})}
	if err := pp.handshake(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("broker %d: %w", id, err)
	}
	pp.lastUsed.Store(time.Now().UnixMilli())
	go pp.readLoop()
	return pp, nil
}

// handshake asks ApiVersions (v0, which every broker answers) for the
// broker's Produce versions.
func (pp *pipe) handshake(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	pp.conn.SetDeadline(deadline)
	defer pp.conn.SetDeadline(time.Time{})
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 0
	if _, err := pp.conn.Write(pp.format.AppendRequest(nil, req, 0)); err != nil {
		return fmt.Errorf("ApiVersions: %w", err)
	}
	frame, err := protocol.ReadFrame(bufio.NewReader(pp.conn), 1<<20, nil)
	if err != nil {
		return fmt.Errorf("ApiVersions answer: %w", err)
	}
	if len(frame) < 4 {
		return errors.New("ApiVersions answer too short")
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	if err := resp.ReadFrom(frame[4:]); err != nil {
		return fmt.Errorf("ApiVersions answer: %w", err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("ApiVersions: %w", err)
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == protocol.KeyProduce {
			if k.MaxVersion < 3 {
				return fmt.Errorf("broker's Produce versions end at %d", k.MaxVersion)
			}
			pp.version = min(k.MaxVersion, pipeProduceVersion)
			return nil
		}
	}
	return errors.New("broker does not list Produce")
}

// send writes one Produce request and returns where its answer will come:
// a result per partition. Requests sent earlier on this pipe are written
// earlier.
func (pp *pipe) send(req *kmsg.ProduceRequest, tps []txnstate.TopicPartition) <-chan map[txnstate.TopicPartition]txnstate.ProduceResult {
	call := &pipeCall{tps: tps, out: make(chan map[txnstate.TopicPartition]txnstate.ProduceResult, 1)}
	req.Version = pp.version
	pp.lastUsed.Store(time.Now().UnixMilli())
	pp.wmu.Lock()
	defer pp.wmu.Unlock()
	select {
	case <-pp.done:
		call.out <- failed(tps, pp.err)
		return call.out
	default:
	}
	pp.corr++
	call.corr = pp.corr
	pp.buf = pp.format.AppendRequest(pp.buf[:0], req, call.corr)
	select {
	case pp.inflight <- call:
	case <-pp.done:
		call.out <- failed(tps, pp.err)
		return call.out
	}
	pp.conn.SetWriteDeadline(time.Now().Add(pipeTimeout))
	if _, err := pp.conn.Write(pp.buf); err != nil {
		pp.fail(fmt.Errorf("write: %w", err))
	}
	if cap(pp.buf) > 4<<20 {
		pp.buf = nil // do not keep a rare huge request's buffer
	}
	return call.out
}

// readLoop matches answers to requests in order.
func (pp *pipe) readLoop() {
	r := bufio.NewReaderSize(pp.conn, 64<<10)
	var buf []byte
	for {
		var call *pipeCall
		select {
		case call = <-pp.inflight:
		case <-pp.done:
			pp.drain()
			return
		}
		pp.conn.SetReadDeadline(time.Now().Add(pipeTimeout))
		frame, err := protocol.ReadFrame(r, 16<<20, buf)
		buf = frame[:0]
		if err == nil {
			err = pp.deliver(call, frame)
		}
		if err != nil {
			pp.fail(err)
			call.out <- failed(call.tps, pp.err)
			pp.drain()
			return
		}
	}
}

func (pp *pipe) deliver(call *pipeCall, frame []byte) error {
	if len(frame) < 4 {
		return errors.New("answer too short")
	}
	if corr := int32(binary.BigEndian.Uint32(frame)); corr != call.corr {
		return fmt.Errorf("answer for request %d, expected %d", corr, call.corr)
	}
	hl, err := protocol.ResponseHeaderLen(protocol.KeyProduce, pp.version, frame)
	if err != nil {
		return err
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.Version = pp.version
	if err := resp.ReadFrom(frame[hl:]); err != nil {
		return fmt.Errorf("Produce answer: %w", err)
	}
	out := make(map[txnstate.TopicPartition]txnstate.ProduceResult, len(call.tps))
	for _, t := range resp.Topics {
		for _, rp := range t.Partitions {
			tp := txnstate.TopicPartition{Topic: t.Topic, Partition: rp.Partition}
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				out[tp] = txnstate.ProduceResult{Err: err, Ambiguous: Ambiguous(rp.ErrorCode)}
				continue
			}
			out[tp] = txnstate.ProduceResult{BaseOffset: rp.BaseOffset}
		}
	}
	for _, tp := range call.tps {
		if _, ok := out[tp]; !ok {
			out[tp] = txnstate.ProduceResult{Err: fmt.Errorf("%s/%d missing from the answer", tp.Topic, tp.Partition), Ambiguous: true}
		}
	}
	call.out <- out
	return nil
}

// fail closes the pipe once; everything in flight or sent later fails.
func (pp *pipe) fail(err error) {
	pp.once.Do(func() {
		pp.err = err
		close(pp.done)
		pp.conn.Close()
	})
}

// drain fails the calls left in flight. It holds the write lock, so a call
// is either queued before the drain (and failed by it) or sent after the
// pipe is seen closed (and failed by send).
func (pp *pipe) drain() {
	pp.wmu.Lock()
	defer pp.wmu.Unlock()
	for {
		select {
		case call := <-pp.inflight:
			call.out <- failed(call.tps, pp.err)
		default:
			return
		}
	}
}

func (pp *pipe) closed() bool {
	select {
	case <-pp.done:
		return true
	default:
		return false
	}
}

// failed is the answer for requests whose fate is unknown: they may have
// been written before the connection failed.
func failed(tps []txnstate.TopicPartition, err error) map[txnstate.TopicPartition]txnstate.ProduceResult {
	out := make(map[txnstate.TopicPartition]txnstate.ProduceResult, len(tps))
	for _, tp := range tps {
		out[tp] = txnstate.ProduceResult{Err: fmt.Errorf("connection to the backend: %w", err), Ambiguous: true}
	}
	return out
}
