package proxy

// FindCoordinator v0–v6.
//
// For transactional ids (coordinator type 1) eosproxy answers itself, and
// names the listener of the lowest upstream broker id: eosproxy is the
// transaction coordinator, and every eosproxy listener serves the
// coordinator's requests. For groups it passes the request on and maps the
// coordinator's address in the answer to eosproxy's listener for that
// broker, so group traffic reaches the backend's group coordinator through
// eosproxy.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/protocol"
)

const coordinatorTypeTxn int8 = 1

func handleFindCoordinator(c *conn, r *request) error {
	if err := passMapped(c, r); err != nil {
		return err
	}
	allowed := func(id string) bool {
		if c.mayDescribeTxn(id) {
			return true
		}
		c.log.Warn().Str("principal", c.principal()).Str("txn", id).Str("reason", "the ACL file does not grant the transactional id").
			Msg("refusing FindCoordinator: TRANSACTIONAL_ID_AUTHORIZATION_FAILED")
		return false
	}
	body, err := c.p.findTxnCoordinator(c.ctx, r.hdr, r.body(), allowed)
	if err != nil {
		return err
	}
	if body != nil {
		r.answer(body)
	}
	return nil
}

// findTxnCoordinator answers FindCoordinator for transactional ids with
// eosproxy itself; other FindCoordinator requests pass (nil). An id the
// principal may not describe is TRANSACTIONAL_ID_AUTHORIZATION_FAILED with
// no node, as Kafka answers it.
func (p *Proxy) findTxnCoordinator(ctx context.Context, hdr protocol.RequestHeader, body []byte, allowed func(string) bool) ([]byte, error) {
	r := kmsg.NewPtrFindCoordinatorRequest()
	r.SetVersion(hdr.APIVersion)
	if err := r.ReadFrom(body); err != nil {
		return nil, bad("decode FindCoordinator v%d: %w", hdr.APIVersion, err)
	}
	if r.CoordinatorType != coordinatorTypeTxn {
		return nil, nil
	}
	id, ok := p.txnCoordinatorID()
	if !ok {
		rctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
		err := p.refreshBrokers(rctx)
		cancel()
		if err != nil {
			p.log.Warn().Err(err).Msg("cannot learn upstream brokers to name a transaction coordinator")
		}
		id, ok = p.txnCoordinatorID()
	}
	var code int16
	var port int32
	if ok {
		b, _ := p.brokers.lookup(id)
		port = b.port
	} else {
		code = kerr.CoordinatorNotAvailable.Code
		id = -1
	}
	// answer is the coordinator of key: this one, or no node.
	answer := func(key string) (int16, int32, string, int32) {
		if !allowed(key) {
			return kerr.TransactionalIDAuthorizationFailed.Code, -1, "", -1
		}
		return code, id, p.advHost, port
	}
	resp := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
	if r.Version < 4 {
		resp.ErrorCode, resp.NodeID, resp.Host, resp.Port = answer(r.CoordinatorKey)
		return resp.AppendTo(nil), nil
	}
	for _, key := range r.CoordinatorKeys {
		co := kmsg.NewFindCoordinatorResponseCoordinator()
		co.Key, co.ErrorMessage = key, kmsg.StringPtr("") // Kafka's default, not null
		co.ErrorCode, co.NodeID, co.Host, co.Port = answer(key)
		resp.Coordinators = append(resp.Coordinators, co)
	}
	return resp.AppendTo(nil), nil
}

// txnCoordinatorID is the broker id eosproxy names as the coordinator of
// every transactional id: the lowest upstream broker id, whose listener, like
// every eosproxy listener, serves the coordinator requests itself.
func (p *Proxy) txnCoordinatorID() (int32, bool) {
	p.brokers.mu.RLock()
	defer p.brokers.mu.RUnlock()
	id, found := int32(0), false
	for bid, b := range p.brokers.byID {
		if b.upstream == "" {
			continue
		}
		if !found || bid < id {
			id, found = bid, true
		}
	}
	return id, found
}
