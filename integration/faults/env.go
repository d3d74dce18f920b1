package faults

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// NoEOSVersions is the stable API set without the keys a broker needs for
// idempotence and transactions: given to kfake.MaxVersions, it makes a
// backend that cannot be doing eosproxy's exactly-once work itself.
func NoEOSVersions() *kversion.Versions {
	vs := kversion.Stable()
	for _, k := range []kmsg.Key{kmsg.InitProducerID, kmsg.AddPartitionsToTxn, kmsg.AddOffsetsToTxn,
		kmsg.EndTxn, kmsg.TxnOffsetCommit, kmsg.WriteTxnMarkers, kmsg.DescribeProducers,
		kmsg.DescribeTransactions, kmsg.ListTransactions} {
		vs.SetMaxKeyVersion(int16(k), -1)
	}
	return vs
}

// FreePortRange finds n consecutive free ports on 127.0.0.1 below the
// kernel's ephemeral range, so that no client's outgoing connection can take
// one of them while a killed eosproxy is down before its restart.
func FreePortRange(rng *rand.Rand, n int) (int, error) {
	lo, hi := 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > lo+1000 {
				hi = v
			}
		}
	}
	for range 200 {
		base := lo + rng.IntN(hi-lo-n)
		var lns []net.Listener
		for i := range n {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if len(lns) == n {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no %d consecutive free ports in %d-%d", n, lo, hi)
}
