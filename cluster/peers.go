// The instances of a cluster as brokers its clients know of. The owner's
// Metadata names its own broker listeners only, so a client that has read
// it knows no other instance: when the owner dies, a client that never goes
// back to its bootstrap servers (Java's before 4.0, whose
// metadata.recovery.strategy is none) keeps trying the dead owner's ports
// for ever. So every instance publishes its client-facing address in its
// join metadata, the group's leader hands the list to every member with
// its assignment, and the owner names the standbys in its Metadata and
// DescribeCluster answers as brokers that lead nothing. A standby relays
// such a client to the owner, whoever that is by then.

package cluster

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"slices"
)

// Peer is an instance of the cluster as its clients reach it.
type Peer struct {
	Instance string
	Addr     string // host:port of its bootstrap listener, as clients reach it
}

// PeerNodeID is the node id under which clients know the instance: stable
// across restarts (the instance id is kept in its data dir), and above the
// ids brokers use (Kafka's are small: 0, 1, 2, ...), so that it names no
// backend broker.
func PeerNodeID(instance string) int32 {
	h := fnv.New32a()
	h.Write([]byte(instance))
	return 1<<30 | int32(h.Sum32()&(1<<30-1))
}

// appendPeer appends p as two length-prefixed strings.
func appendPeer(b []byte, p Peer) []byte {
	for _, s := range []string{p.Instance, p.Addr} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return b
}

var errPeers = errors.New("malformed instance list")

// readPeer reads what appendPeer wrote from the start of b and returns the
// rest.
func readPeer(b []byte) (Peer, []byte, error) {
	var s [2]string
	for i := range s {
		if len(b) < 2 {
			return Peer{}, nil, errPeers
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return Peer{}, nil, errPeers
		}
		s[i], b = string(b[2:2+n]), b[2+n:]
	}
	return Peer{Instance: s[0], Addr: s[1]}, b, nil
}

// encodePeers is the list the leader hands every member with its
// assignment.
func encodePeers(ps []Peer) []byte {
	var b []byte
	for _, p := range ps {
		b = appendPeer(b, p)
	}
	return b
}

func decodePeers(b []byte) ([]Peer, error) {
	var ps []Peer
	for len(b) > 0 {
		p, rest, err := readPeer(b)
		if err != nil {
			return nil, err
		}
		ps, b = append(ps, p), rest
	}
	return ps, nil
}

// Peers returns the other instances in the group as of the latest
// assignment this member received, sorted by instance id.
func (m *Member) Peers() []Peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Peer, 0, len(m.peers))
	for _, p := range m.peers {
		if p.Instance != m.cfg.Instance {
			out = append(out, p)
		}
	}
	return out
}

func (m *Member) setPeers(ps []Peer) {
	slices.SortFunc(ps, func(a, b Peer) int {
		if a.Instance < b.Instance {
			return -1
		}
		if a.Instance > b.Instance {
			return 1
		}
		return 0
	})
	m.mu.Lock()
	m.peers = ps
	m.mu.Unlock()
}
