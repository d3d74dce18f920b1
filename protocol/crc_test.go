package protocol

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// A header rewrite's CRC, updated without reading the records, equals the
// CRC computed afresh, for batches of every size class; and a batch whose
// CRC was wrong stays wrong.
func TestPatchedCRCMatchesRecomputed(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{BatchHeaderLen, BatchHeaderLen + 1, BatchHeaderLen + 7, 100, 1000, 4096, 65537, 1 << 20}
	for range 200 {
		sizes = append(sizes, BatchHeaderLen+rng.IntN(300_000))
	}
	for _, n := range sizes {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		resign := func() { binary.BigEndian.PutUint32(b[batchCRCOff:], crc32.Checksum(b[batchAttrOff:n], castagnoli)) }
		check := func(what string) {
			t.Helper()
			want := crc32.Checksum(b[batchAttrOff:n], castagnoli)
			if got := binary.BigEndian.Uint32(b[batchCRCOff:]); got != want {
				t.Fatalf("%s of a %d-byte batch: CRC %08x, recomputed %08x", what, n, got, want)
			}
		}
		resign()
		SetProducer(b, n, rng.Int64(), int16(rng.Uint32()), int32(rng.Uint32()))
		check("SetProducer")
		b[batchAttrOff+1] |= attrTransactional
		resign()
		ClearTransactional(b, n)
		check("ClearTransactional")
		if b[batchAttrOff+1]&attrTransactional != 0 {
			t.Fatal("ClearTransactional left the transactional bit")
		}
		ClearProducer(b, n)
		check("ClearProducer")

		binary.BigEndian.PutUint32(b[batchCRCOff:], binary.BigEndian.Uint32(b[batchCRCOff:])^1)
		SetProducer(b, n, 7, 1, 0)
		if binary.BigEndian.Uint32(b[batchCRCOff:]) == crc32.Checksum(b[batchAttrOff:n], castagnoli) {
			t.Fatalf("a %d-byte batch with a wrong CRC got a right one", n)
		}
	}
}

func TestMulModPIsPolynomialProduct(t *testing.T) {
	// x^a · x^b = x^(a+b): carrying a CRC over a then b zero bytes is
	// carrying it over a+b.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		a, c := rng.IntN(1<<22), rng.IntN(1<<22)
		if got, want := mulModP(xPowBytes(a), xPowBytes(c)), xPowBytes(a+c); got != want {
			t.Fatalf("x^8·%d · x^8·%d = %08x, want %08x", a, c, got, want)
		}
	}
}

func BenchmarkSetProducer(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for i := 0; b.Loop(); i++ {
		SetProducer(buf, len(buf), int64(i), 0, int32(i))
	}
}
