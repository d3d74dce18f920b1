package integration

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Until eosproxy is the transaction coordinator itself, transactional
// requests pass through to a backend that has transactions: they must work
// unchanged, with the coordinator's address rewritten like any broker's.
func TestTransactionsPassThrough(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		p := startProxy(t, b)
		adm := kadm.NewClient(newClient(t, p.Addr()))
		topic := createTopic(t, adm, 2)
		prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.TransactionalID(topic+"-txn"))
		run := func(from, n int, commit bool) {
			t.Helper()
			if err := prod.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			produceN(t, prod, topic, from, n)
			if err := prod.EndTransaction(testCtx(t), kgo.TransactionEndTry(commit)); err != nil {
				t.Fatalf("end transaction (commit=%v): %v", commit, err)
			}
		}
		run(0, 100, true)
		run(100, 50, false)
		run(100, 100, true)
		cons := newClient(t, p.Addr(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		got := consumeAll(t, cons, 200)
		checkAllOnceInOrder(t, got, 200)
	})
}
