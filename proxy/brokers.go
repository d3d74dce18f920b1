package proxy

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/rs/zerolog"
)

// broker is one upstream broker as clients see it through eosproxy.
type broker struct {
	id       int32
	port     int32 // client-facing
	ln       net.Listener
	upstream string // host:port of the real broker; "" until learned
}

// brokerMap maps upstream broker ids to client-facing listeners. A broker keeps
// its port across restarts (persisted), so clients holding cached metadata
// reconnect to the same broker after eosproxy restarts.
type brokerMap struct {
	log      zerolog.Logger
	host     string // listener bind host
	persist  PortStore
	nextPort func(used map[int32]bool) (int32, error)
	serve    func(*broker)

	mu     sync.RWMutex
	byID   map[int32]*broker
	closed bool
}

// PortStore keeps broker-id → port assignments across restarts.
type PortStore interface {
	LoadPorts() (map[int32]int32, error)
	SavePort(id, port int32) error
}

var errClosed = errors.New("proxy is shutting down")

// lookup returns the broker for id and the upstream address it maps to.
func (m *brokerMap) lookup(id int32) (*broker, string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	b := m.byID[id]
	if b == nil {
		return nil, ""
	}
	return b, b.upstream
}

// ensure returns the client-facing port of broker id at upstream addr,
// starting a listener for it if it is new. The fast path is a read lock: it
// runs for every broker in every Metadata response.
func (m *brokerMap) ensure(id int32, upstream string) (int32, error) {
	m.mu.RLock()
	b := m.byID[id]
	if b != nil && b.upstream == upstream {
		m.mu.RUnlock()
		return b.port, nil
	}
	m.mu.RUnlock()

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, errClosed
	}
	if b = m.byID[id]; b != nil {
		if b.upstream != upstream && upstream != "" {
			if b.upstream != "" {
				m.log.Info().Int32("broker", id).Str("from", b.upstream).Str("to", upstream).Msg("upstream broker address changed")
			}
			b.upstream = upstream
		}
		return b.port, nil
	}
	b, err := m.listen(id, -1)
	if err != nil {
		return 0, err
	}
	b.upstream = upstream
	return b.port, nil
}

// listen starts the listener for broker id, on port if >= 0, else on a new
// port that it persists. Called with mu held.
func (m *brokerMap) listen(id, port int32) (*broker, error) {
	used := make(map[int32]bool, len(m.byID))
	for _, b := range m.byID {
		used[b.port] = true
	}
	persisted, err := m.persist.LoadPorts()
	if err != nil {
		return nil, err
	}
	for oid, p := range persisted {
		if oid != id {
			used[p] = true
		}
	}
	fresh := port < 0
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		if fresh {
			if port, err = m.nextPort(used); err != nil {
				return nil, fmt.Errorf("no port for broker %d: %w", id, err)
			}
		}
		ln, err = net.Listen("tcp", net.JoinHostPort(m.host, strconv.Itoa(int(port))))
		if err == nil {
			break
		}
		if !fresh || attempt > 64 || port == 0 {
			return nil, fmt.Errorf("listen for broker %d: %w", id, err)
		}
		m.log.Warn().Err(err).Int32("broker", id).Int32("port", port).Msg("port taken, trying the next")
		used[port] = true
	}
	b := &broker{id: id, port: int32(ln.Addr().(*net.TCPAddr).Port), ln: ln}
	if fresh {
		if err := m.persist.SavePort(id, b.port); err != nil {
			ln.Close()
			return nil, err
		}
	}
	m.byID[id] = b
	m.log.Info().Int32("broker", id).Str("listen", ln.Addr().String()).Msg("listening for broker")
	m.serve(b)
	return b, nil
}

// closeAll stops every broker listener; connections already open stay.
func (m *brokerMap) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for _, b := range m.byID {
		b.ln.Close()
	}
}
