package proxy

// InitProducerId v0–v5, answered by eosproxy itself; never passed on.
//
// With a transactional id eosproxy is the transaction coordinator: it gives
// the id's producer id and a new epoch, fencing the previous producer, and
// ends an open transaction (txnstate). Without one the producer is
// idempotent: eosproxy gives a new producer id of its own on every call, as
// Kafka does, and pairs it with a producer id the backend gave eosproxy
// (where the backend has idempotence; upstream/pairing.go), under which the
// producer's batches are forwarded, so the backend drops a batch written
// twice too.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/metrics"
	"github.com/eosproxy/eosproxy/txnstate"
)

func handleInitProducerID(c *conn, r *request) error {
	return answerLocal(r, kmsg.NewPtrInitProducerIDRequest(), func(req *kmsg.InitProducerIDRequest) []byte {
		var code int16
		if req.TransactionalID != nil {
			code = c.authorizeTxn("InitProducerId", *req.TransactionalID, -1)
		} else {
			code = c.authorizeIdempotent("InitProducerId", -1)
		}
		if code != 0 {
			resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
			resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = code, -1, -1
			return resp.AppendTo(nil)
		}
		var body []byte
		if req.TransactionalID != nil {
			body = c.initProducerIDTxn(req)
		} else {
			body = c.p.initProducerID(c.ctx, req)
		}
		return c.bindProducerID(req, body)
	})
}

// bindProducerID binds the producer id an InitProducerId answer gives to
// the connection's principal before the client learns it; the answer if
// that fails asks the client to retry.
func (c *conn) bindProducerID(req *kmsg.InitProducerIDRequest, body []byte) []byte {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	if resp.ReadFrom(body) != nil || resp.ErrorCode != 0 {
		return body
	}
	if err := c.p.owners.bind(resp.ProducerID, c.principal()); err != nil {
		c.log.Error().Err(err).Msg("InitProducerId answered COORDINATOR_LOAD_IN_PROGRESS")
		resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = kerr.CoordinatorLoadInProgress.Code, -1, -1
		return resp.AppendTo(nil)
	}
	return body
}

// initProducerID answers an idempotent producer's InitProducerId.
func (p *Proxy) initProducerID(ctx context.Context, req *kmsg.InitProducerIDRequest) []byte {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	// Kafka gives an idempotent producer a new id on every call, even
	// one that names its old id and epoch (KIP-360).
	id, err := p.newProducerID()
	if err != nil {
		p.log.Error().Err(err).Msg("cannot allocate a producer id")
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		resp.ProducerID, resp.ProducerEpoch = -1, -1
	} else if err := p.up.Pair(ctx, id); err != nil {
		// As Kafka answers while its producer id block is not ready:
		// every client retries it (franz-go, Java, librdkafka).
		p.log.Debug().Err(err).Msg("InitProducerId answered COORDINATOR_LOAD_IN_PROGRESS")
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		resp.ProducerID, resp.ProducerEpoch = -1, -1
	} else {
		resp.ProducerID, resp.ProducerEpoch = id, 0
	}
	return resp.AppendTo(nil)
}

func (c *conn) initProducerIDTxn(r *kmsg.InitProducerIDRequest) []byte {
	p := c.p
	before := p.coord.Get(*r.TransactionalID)
	res := p.coord.InitProducerID(c.ctx, txnstate.InitProducerIDRequest{
		TransactionalID: *r.TransactionalID, TimeoutMs: r.TransactionTimeoutMillis,
		ProducerID: r.ProducerID, Epoch: r.ProducerEpoch, Version: r.Version,
	})
	c.refused(res.Err, *r.TransactionalID, r.ProducerID)
	if before != nil && before.State == txnstate.Ongoing {
		// A new producer instance fenced the open transaction: it aborts.
		if after := p.coord.Get(*r.TransactionalID); after != nil && after.State != txnstate.Ongoing {
			p.m.TxnEnded(metrics.TxnFenced)
			c.log.Info().Str("txn", before.TransactionalID).Int64("producer", before.ProducerID).Int16("epoch", before.Epoch).
				Msg("a new producer instance fenced the previous one: its open transaction is aborted")
		}
	}
	resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = res.Err, res.ProducerID, res.Epoch
	return resp.AppendTo(nil)
}
