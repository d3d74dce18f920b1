package proxy

// ListTransactions v0–v2, answered by eosproxy itself; never passed on.
//
// eosproxy is the transaction coordinator: it lists txnstate's transactions,
// filtered as asked. Admin clients ask every broker and merge the answers,
// so only the listener of the broker eosproxy names as coordinator lists
// them.

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/eosproxy/eosproxy/txnstate"
)

func handleListTransactions(c *conn, r *request) error {
	return answerLocal(r, kmsg.NewPtrListTransactionsRequest(), func(req *kmsg.ListTransactionsRequest) []byte {
		return c.p.listTxns(req, c.brokerID, c.mayDescribeTxn)
	})
}

// listTxns answers ListTransactions. Admin clients ask every broker and
// merge the answers, so only the broker eosproxy names as coordinator lists
// the transactions; the others answer with none. As Kafka, it lists only
// the ids the principal may describe.
func (p *Proxy) listTxns(r *kmsg.ListTransactionsRequest, brokerID int32, allowed func(string) bool) []byte {
	resp := r.ResponseKind().(*kmsg.ListTransactionsResponse)
	states := map[txnstate.State]bool{}
	for _, name := range r.StateFilters {
		s, ok := txnstate.ParseState(name)
		if !ok {
			resp.UnknownStateFilters = append(resp.UnknownStateFilters, name)
			continue
		}
		states[s] = true
	}
	var pattern *regexp.Regexp
	if r.TransactionalIDPattern != nil && *r.TransactionalIDPattern != "" {
		var err error
		if pattern, err = compileBounded(*r.TransactionalIDPattern); err != nil {
			resp.ErrorCode = kerr.InvalidRequest.Code
			return resp.AppendTo(nil)
		}
	}
	if coord, ok := p.txnCoordinatorID(); !ok || (brokerID >= 0 && brokerID != coord) {
		return resp.AppendTo(nil)
	}
	now := time.Now().UnixMilli()
	for _, t := range p.coord.DescribeAll() {
		switch {
		case len(r.StateFilters) > 0 && !states[t.State],
			len(r.ProducerIDFilters) > 0 && !slices.Contains(r.ProducerIDFilters, t.ProducerID),
			r.DurationFilterMillis >= 0 && r.Version >= 1 && (t.State != txnstate.Ongoing || now-t.StartTimeMs < r.DurationFilterMillis),
			pattern != nil && !pattern.MatchString(t.TransactionalID),
			!allowed(t.TransactionalID):
			continue
		}
		st := kmsg.NewListTransactionsResponseTransactionState()
		st.TransactionalID, st.ProducerID, st.TransactionState = t.TransactionalID, t.ProducerID, t.State.String()
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
	return resp.AppendTo(nil)
}

// maxPatternSize bounds a client's ListTransactions pattern once its
// counted repeats are expanded: Go's compiler expands a{1000} into a
// thousand instructions, so a few hundred bytes of pattern could cost
// hundreds of MiB.
const maxPatternSize = 10_000

// compileBounded compiles a client's regular expression unless its
// expansion would exceed maxPatternSize.
func compileBounded(pattern string) (*regexp.Regexp, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, err
	}
	if expandedSize(re) > maxPatternSize {
		return nil, fmt.Errorf("pattern too complex")
	}
	return regexp.Compile(pattern)
}

// expandedSize estimates the instructions re compiles to, stopping early
// past maxPatternSize.
func expandedSize(re *syntax.Regexp) int {
	n := 1
	for _, sub := range re.Sub {
		if n += expandedSize(sub); n > maxPatternSize {
			return n
		}
	}
	if re.Op == syntax.OpRepeat {
		m := max(re.Max, re.Min, 1)
		if n > maxPatternSize/m {
			return maxPatternSize + 1
		}
		n *= m
	}
	return n
}
