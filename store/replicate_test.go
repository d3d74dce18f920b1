package store

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/rs/zerolog"
)

// logRepl is a Replicator that keeps the sets in order, as the cluster's
// log does, or refuses them.
type logRepl struct {
	sets   [][]byte
	refuse error
}

func (l *logRepl) Append(set []byte) func() error {
	if l.refuse != nil {
		return func() error { return l.refuse }
	}
	l.sets = append(l.sets, bytes.Clone(set))
	return func() error { return nil }
}

type memBlobs struct{ blobs [][]byte }

func (m *memBlobs) Put(b []byte) ([]byte, error) {
	m.blobs = append(m.blobs, bytes.Clone(b))
	return fmt.Appendf(nil, "local-%d", len(m.blobs)-1), nil
}

func dump(t *testing.T, d *DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := d.Scan(nil, func(k, v []byte) error { out[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// Writes replayed on another store, in order, give the same state, except
// that blobs get that store's own references and local keys stay home.
func TestReplicatedWritesReplay(t *testing.T) {
	a, _ := OpenInMemory(zerolog.Nop())
	b, _ := OpenInMemory(zerolog.Nop())
	defer a.Close()
	defer b.Close()
	l := &logRepl{}
	a.SetReplicator(l, []byte("local/"))
	b.SetReplicator(nil, []byte("local/"))

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Put([]byte("k1"), []byte("v1")))
	must(a.Put([]byte("local/id"), []byte("a")))
	must(a.Update(func(tx *Txn) error {
		if err := tx.Set([]byte("k2"), []byte("v2")); err != nil {
			return err
		}
		return tx.SetBlob([]byte("batch/1"), []byte("ref-in-a"), []byte("the batch bytes"))
	}))
	must(a.Put([]byte("k1"), []byte("v1b")))
	must(a.DeleteKeys([][]byte{[]byte("k2")}))
	if len(l.sets) != 4 {
		t.Fatalf("%d sets replicated, want 4 (the local key's write is not)", len(l.sets))
	}

	must(b.Put([]byte("local/id"), []byte("b")))
	must(b.Put([]byte("stale"), []byte("x")))
	must(b.Reset())
	blobs := &memBlobs{}
	for _, s := range l.sets {
		must(b.Apply(s, blobs))
	}
	got := dump(t, b)
	want := map[string]string{"k1": "v1b", "batch/1": "local-0", "local/id": "b"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replica holds %v, want %v", got, want)
	}
	if len(blobs.blobs) != 1 || string(blobs.blobs[0]) != "the batch bytes" {
		t.Fatalf("replica's blobs %q", blobs.blobs)
	}
}

// A write the replicator refuses is an error to the writer: it must not
// answer a client as if the write were durable.
func TestRefusedReplicationIsAnError(t *testing.T) {
	a, _ := OpenInMemory(zerolog.Nop())
	defer a.Close()
	fenced := errors.New("fenced")
	a.SetReplicator(&logRepl{refuse: fenced})
	if err := a.Put([]byte("k"), []byte("v")); !errors.Is(err, fenced) {
		t.Fatalf("Put = %v, want the replicator's refusal", err)
	}
}

func TestSetCodecRoundTrip(t *testing.T) {
	in := []Mutation{{Key: []byte("a"), Value: []byte{}}, {Key: []byte("b"), Delete: true}, {Key: []byte("c"), Blob: []byte("xyz")}}
	out, err := DecodeSet(EncodeSet(in))
	if err != nil || len(out) != 3 || !out[1].Delete || string(out[2].Blob) != "xyz" || out[0].Value == nil {
		t.Fatalf("round trip: %+v %v", out, err)
	}
	if _, err := DecodeSet([]byte{0, 5, 'a'}); err == nil {
		t.Fatal("a truncated set decoded")
	}
}
