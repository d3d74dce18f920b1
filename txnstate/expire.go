// Decisions the clock takes: a transaction open past its timeout is aborted,
// and an id unused for transactional.id.expiration.ms is forgotten. A loop of
// its own, as Kafka's TransactionStateManager schedules both.

package txnstate

import (
	"time"

	"github.com/eosproxy/eosproxy/store"
)

func (c *Coordinator) timeoutLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.opt.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		es := c.entries()
		for _, e := range es {
			c.expire(e)
		}
	}
}

// expire aborts e's transaction if it timed out, and forgets e if it was
// unused for Expiration.
func (c *Coordinator) expire(e *entry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := c.nowMs()
	cur := e.txn.Load()
	if r := Timeout(c.opt.Config, cur, now); r.Txn != nil {
		e.writes.Wait()
		c.log.Info().Str("txn", e.id).Int32("timeout_ms", cur.TimeoutMs).Msg("transaction timed out: aborting it and fencing its producer")
		c.apply(e, r)
		if c.opt.OnTimeout != nil {
			c.opt.OnTimeout(e.id)
		}
		return
	}
	if r := Expire(cur, now, c.opt.Expiration.Milliseconds()); r.Txn != nil && !e.busy() {
		err := c.db.Update(func(txn *store.Txn) error {
			for tp := range e.seqs {
				if err := txn.Delete(tpKey(prefixSeq, e.id, tp)); err != nil {
					return err
				}
			}
			for _, prefix := range []string{prefixGen, prefixBroken, prefixUpstream} {
				if err := txn.Delete(idKey(prefix, e.id)); err != nil {
					return err
				}
			}
			return txn.Delete(idKey(prefixMeta, e.id))
		})
		if err != nil {
			c.log.Warn().Err(err).Str("txn", e.id).Msg("cannot expire transactional id")
			return
		}
		c.swap(e, cur, r.Txn)
		c.mu.Lock()
		delete(c.txns, e.id)
		c.mu.Unlock()
		c.log.Info().Str("txn", e.id).Msg("transactional id expired")
	}
}
