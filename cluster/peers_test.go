package cluster

import (
	"slices"
	"testing"
	"time"
)

// Every member learns the others' client addresses with its assignment,
// and a member that leaves drops out of the others' lists.
func TestMembersKnowEachOthersAddresses(t *testing.T) {
	c := newBackend(t)
	withAddr := func(addr string) func(*Config) { return func(cfg *Config) { cfg.ClientAddr = addr } }
	a := join(t, c, "a", time.Second, withAddr("10.0.0.1:9092"))
	b := join(t, c, "b", time.Second, withAddr("10.0.0.2:9092"))
	d := join(t, c, "d", time.Second, withAddr("10.0.0.3:9092"))
	firstOwner(t, 10*time.Second, a, b, d)
	want := map[*member][]Peer{
		a: {{"b", "10.0.0.2:9092"}, {"d", "10.0.0.3:9092"}},
		b: {{"a", "10.0.0.1:9092"}, {"d", "10.0.0.3:9092"}},
		d: {{"a", "10.0.0.1:9092"}, {"b", "10.0.0.2:9092"}},
	}
	for tm, w := range want {
		eventually(t, 15*time.Second, tm.cfg.Instance+" knows the others", func() bool { return slices.Equal(tm.Peers(), w) })
	}
	d.Close()
	for _, tm := range []*member{a, b} {
		w := slices.DeleteFunc(slices.Clone(want[tm]), func(p Peer) bool { return p.Instance == "d" })
		eventually(t, 15*time.Second, tm.cfg.Instance+" drops the member that left", func() bool { return slices.Equal(tm.Peers(), w) })
	}
}

func TestPeersCodec(t *testing.T) {
	ps := []Peer{{"a", "h:1"}, {"", ""}, {"instance-b", "[::1]:9092"}}
	got, err := decodePeers(encodePeers(ps))
	if err != nil || !slices.Equal(got, ps) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if _, err := decodePeers([]byte{0, 5, 'a'}); err == nil {
		t.Fatal("a truncated list decoded")
	}
	a, again, b := PeerNodeID("a"), PeerNodeID(string([]byte("a"))), PeerNodeID("b")
	if a == b || a < 1<<30 || b < 1<<30 || a != again {
		t.Fatalf("node ids %d, %d, %d: not distinct, stable and above brokers' ids", a, again, b)
	}
}
