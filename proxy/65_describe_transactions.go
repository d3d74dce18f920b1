package proxy

// DescribeTransactions v0, answered by eosproxy itself; never passed on.
//
// eosproxy is the transaction coordinator: the transactions' state is
// txnstate's, and the backend knows nothing of them.

import (
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/txnstate"
)

func handleDescribeTransactions(c *conn, r *request) error {
	return answerLocal(r, kmsg.NewPtrDescribeTransactionsRequest(), func(req *kmsg.DescribeTransactionsRequest) []byte {
		return c.p.describeTxns(req, c.mayDescribeTxn)
	})
}

// describeTxns answers DescribeTransactions; an id the principal may not
// describe is TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka answers it.
func (p *Proxy) describeTxns(r *kmsg.DescribeTransactionsRequest, allowed func(string) bool) []byte {
	resp := r.ResponseKind().(*kmsg.DescribeTransactionsResponse)
	for _, id := range r.TransactionalIDs {
		st := kmsg.NewDescribeTransactionsResponseTransactionState()
		st.TransactionalID = id
		var t *txnstate.Txn
		if allowed(id) {
			t = p.coord.Describe(id)
		}
		if t == nil {
			st.ErrorCode = kerr.TransactionalIDNotFound.Code
			if !allowed(id) {
				st.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
			}
			st.ProducerID, st.ProducerEpoch, st.StartTimestamp = -1, -1, -1
			resp.TransactionStates = append(resp.TransactionStates, st)
			continue
		}
		st.State, st.TimeoutMillis, st.StartTimestamp = t.State.String(), t.TimeoutMs, t.StartTimeMs
		st.ProducerID, st.ProducerEpoch = t.ProducerID, t.Epoch
		byTopic := map[string][]int32{}
		for tp := range t.Partitions {
			byTopic[tp.Topic] = append(byTopic[tp.Topic], tp.Partition)
		}
		for _, topic := range slices.Sorted(maps.Keys(byTopic)) {
			rt := kmsg.NewDescribeTransactionsResponseTransactionStateTopic()
			rt.Topic, rt.Partitions = topic, byTopic[topic]
			slices.Sort(rt.Partitions)
			st.Topics = append(st.Topics, rt)
		}
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
	return resp.AppendTo(nil)
}
