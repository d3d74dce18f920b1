package integration

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka's own admin tool (kafka-transactions.sh, class TransactionsCommand)
// lists and describes transactions from eosproxy's state: an open one with
// its partitions, then the same one committed.
func TestRealTransactionsCommand(t *testing.T) {
	b := realBackend(t)
	sh := kafkaSh(t)
	p := startProxy(t, b)
	topic := createTopic(t, kadm.NewClient(newClient(t, p.Addr())), 2)
	id := topic + "-txn"
	prod := newClient(t, p.Addr(), kgo.DefaultProduceTopic(topic), kgo.TransactionalID(id))
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceAndFlush(t, prod, topic, 0, 20)

	tool := func(args ...string) string {
		t.Helper()
		out, _ := runTool(t, "", "bash", append([]string{sh, "run", "org.apache.kafka.tools.TransactionsCommand",
			"--bootstrap-server", p.Addr()}, args...)...)
		return out
	}
	// Columns: TransactionalId Coordinator ProducerId TransactionState.
	rows := func(out string) [][]string {
		var rs [][]string
		for _, l := range splitLines(out) {
			if f := strings.Fields(l); len(f) >= 4 && f[0] == id {
				rs = append(rs, f)
			}
		}
		return rs
	}
	if rs := rows(tool("list")); len(rs) != 1 || rs[0][3] != "Ongoing" {
		t.Fatalf("kafka-transactions.sh list shows %v for %s, want it once, Ongoing", rs, id)
	}
	// CoordinatorId TransactionalId ProducerId ProducerEpoch
	// TransactionState TransactionTimeoutMs CurrentTransactionStartTimeMs
	// TransactionDurationMs TopicPartitions
	desc := tool("describe", "--transactional-id", id)
	var row []string
	for _, l := range splitLines(desc) {
		if f := strings.Fields(l); len(f) == 9 && f[1] == id {
			row = f
		}
	}
	if row == nil || row[4] != "Ongoing" || !strings.Contains(row[8], topic+"-0") || !strings.Contains(row[8], topic+"-1") {
		t.Fatalf("kafka-transactions.sh describe: %v, want %s Ongoing on %s-0 and -1:\n%s", row, id, topic, desc)
	}
	if err := prod.EndTransaction(testCtx(t), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if rs := rows(tool("list")); len(rs) != 1 || rs[0][3] != "CompleteCommit" {
		t.Fatalf("after the commit kafka-transactions.sh list shows %v, want CompleteCommit", rs)
	}
}
