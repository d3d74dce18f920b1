package check

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"

	"github.com/eosproxy/eosproxy/integration/faults"
)

// API keys the connection-drop faults aim at: what eosproxy writes to the
// backend on its own account (idempotent forwarding and commit forwarding
// produce; commit forwarding commits the group's offsets).
const (
	keyProduce      int16 = 0
	keyOffsetCommit int16 = 8
)

// dropper puts a TCP relay of integration/faults in front of every broker
// of the in-process kfake backend and makes the relays drop the connection
// right after a request has been forwarded to the broker (which applies it;
// the answer never comes back).
//
// kfake advertises its listeners' addresses in Metadata, and eosproxy dials
// what Metadata names, so a relay on the bootstrap address alone would see
// only eosproxy's first connection. Instead each broker listens on a port of
// its own while its listener reports the relay's address: kfake then
// advertises the relays, and every connection eosproxy opens to the backend
// (and the checker's own direct clients) goes through one.
type dropper struct {
	targeted *faults.Injector // Produce and OffsetCommit, at rate
	any      *faults.Injector // every request, at rate/10
	relayTLS *tls.Config      // nil: the relays pass TLS through untouched

	mu     sync.Mutex
	relays []*faults.Relay
	byKey  map[int16]int64
}

func newDropper(seed uint64, rate float64, sec *Security) *dropper {
	d := &dropper{byKey: map[int16]int64{}}
	var dial faults.DialFunc // default: net.Dialer
	if sec != nil {
		d.relayTLS = sec.RelayTLS
		dial = (&tls.Dialer{Config: sec.TLS}).DialContext
	}
	d.targeted = faults.NewInjector(faults.Config{
		Seed:        seed ^ 0x5bd1e995,
		Probability: rate,
		Keys:        []int16{keyProduce, keyOffsetCommit},
		Logf:        d.logf,
		Dial:        dial,
	})
	d.any = faults.NewInjector(faults.Config{
		Seed:        seed ^ 0x27d4eb2f,
		Probability: rate / 10,
		Dial:        d.targeted.Dial,
		Logf:        d.logf,
	})
	d.setEnabled(false)
	return d
}

// logf counts the injectors' drop reports by API key ("faults: drop %d:
// closed connection to %s after a whole request with API key %d").
func (d *dropper) logf(format string, args ...any) {
	if len(args) != 3 {
		return
	}
	if key, ok := args[2].(int16); ok {
		d.mu.Lock()
		d.byKey[key]++
		d.mu.Unlock()
	}
}

// listen is kfake's ListenFn: the broker listens on address, and its
// listener reports the address of a relay forwarding to it.
func (d *dropper) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	r, err := faults.NewRelay(faults.RelayConfig{Target: ln.Addr().String(), Dial: d.any.Dial, TLS: d.relayTLS})
	if err != nil {
		ln.Close()
		return nil, err
	}
	addr, err := net.ResolveTCPAddr("tcp", r.Addr())
	if err != nil {
		r.Close()
		ln.Close()
		return nil, err
	}
	d.mu.Lock()
	d.relays = append(d.relays, r)
	d.mu.Unlock()
	return &advertisedListener{Listener: ln, addr: addr}, nil
}

func (d *dropper) setEnabled(on bool) {
	d.targeted.SetEnabled(on)
	d.any.SetEnabled(on)
}

func (d *dropper) drops() int64 { return d.targeted.Drops() + d.any.Drops() }

// dropsByKey names the API keys whose requests lost their connection.
func (d *dropper) dropsByKey() map[string]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int64{}
	for k, n := range d.byKey {
		name := fmt.Sprintf("key %d", k)
		switch k {
		case keyProduce:
			name = "Produce"
		case keyOffsetCommit:
			name = "OffsetCommit"
		case 1:
			name = "Fetch"
		case 2:
			name = "ListOffsets"
		case 3:
			name = "Metadata"
		case 9:
			name = "OffsetFetch"
		case 10:
			name = "FindCoordinator"
		case 11:
			name = "JoinGroup"
		case 12:
			name = "Heartbeat"
		case 13:
			name = "LeaveGroup"
		case 14:
			name = "SyncGroup"
		case 18:
			name = "ApiVersions"
		}
		out[name] += n
	}
	return out
}

func (d *dropper) close() {
	d.mu.Lock()
	rs := d.relays
	d.relays = nil
	d.mu.Unlock()
	for _, r := range rs {
		r.Close()
	}
}

// advertisedListener is a broker's real listener that reports its relay's
// address, which kfake then advertises.
type advertisedListener struct {
	net.Listener
	addr net.Addr
}

func (l *advertisedListener) Addr() net.Addr { return l.addr }
