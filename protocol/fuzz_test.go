package protocol

import (
	"bytes"
	"io"
	"math"
	"runtime"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Every decoder here reads bytes from a peer. None may panic, and none may
// allocate much more than its input justifies; the fuzz targets check both.
// Seeds are valid encodings from kmsg; more live in testdata/fuzz.

// heapAllocated returns the bytes allocated while f runs. It does not force a
// collection, so it is cheap enough to run on every fuzz input.
func heapAllocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func FuzzReadFrame(f *testing.F) {
	f.Add(frameOf([]byte("hello")), int32(100))
	f.Add(append(frameOf(nil), frameOf([]byte{1, 2, 3})...), int32(3))
	f.Add(append(rawSize(50<<20), "0123456789"...), int32(math.MaxInt32))
	f.Add(rawSize(-1), int32(100))
	f.Add([]byte{0, 0}, int32(100))
	f.Add(frameOf(encodeRequestHeader(KeyMetadata, 12, 1, strp("c"), true)), int32(1<<20))
	f.Fuzz(func(t *testing.T, data []byte, limit int32) {
		var frame []byte
		var err error
		r := &chunkReader{r: bytes.NewReader(data), n: 1 + len(data)%7}
		n := heapAllocated(func() { frame, err = ReadFrame(r, limit, nil) })
		// Incremental growth: at most about one step ahead of the data.
		if max := uint64(3<<20) + 4*uint64(len(data)); n > max {
			t.Fatalf("allocated %d bytes for %d bytes of input", n, len(data))
		}
		if err != nil {
			if len(frame) != 0 {
				t.Fatalf("error %v with %d bytes", err, len(frame))
			}
			if err == io.EOF && len(data) != 0 {
				t.Fatalf("io.EOF after reading %d bytes", len(data))
			}
			return
		}
		size := int32(uint32(data[0])<<24 | uint32(data[1])<<16 | uint32(data[2])<<8 | uint32(data[3]))
		if size < 0 || size > limit || int(size) != len(frame) || !bytes.Equal(frame, data[4:4+size]) {
			t.Fatalf("frame of %d bytes for announced size %d, limit %d", len(frame), size, limit)
		}
	})
}

func FuzzParseRequestHeader(f *testing.F) {
	for _, key := range []int16{KeyProduce, KeyMetadata, KeyApiVersions, 22, 17} {
		req := kmsg.RequestForKey(key)
		for _, v := range []int16{0, req.MaxVersion()} {
			req.SetVersion(v)
			f.Add(append(encodeRequestHeader(key, v, 7, strp("fuzz-client"), kmsgFlexible(key, v)), req.AppendTo(nil)...))
		}
	}
	f.Add(append(encodeRequestHeader(KeyMetadata, 12, 1, nil, false), tagSection([]byte("abc"), nil)...))
	f.Add(encodeRequestHeader(999, 1, 1, strp("x"), false))
	f.Fuzz(func(t *testing.T, frame []byte) {
		n := heapAllocated(func() { checkRequestHeaderInvariants(t, frame) })
		if n > 1<<16+2*uint64(len(frame)) {
			t.Fatalf("allocated %d bytes for a %d-byte header", n, len(frame))
		}
	})
}

func FuzzResponseHeaderLen(f *testing.F) {
	f.Add(KeyApiVersions, int16(3), []byte{0, 0, 0, 1, 0, 0})
	f.Add(KeyMetadata, int16(12), []byte{0, 0, 0, 1, 0})
	f.Add(KeyMetadata, int16(13), append([]byte{0, 0, 0, 1}, tagSection([]byte("abc"), nil)...))
	f.Add(KeyMetadata, int16(8), []byte{0, 0, 0, 1, 0xff})
	f.Add(int16(999), int16(0), []byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, key, version int16, resp []byte) {
		n, err := ResponseHeaderLen(key, version, resp)
		if err != nil {
			return
		}
		if n < 4 || n > len(resp) {
			t.Fatalf("header length %d for %d bytes", n, len(resp))
		}
		flex, _ := RequestIsFlexible(key, version)
		if (!flex || key == KeyApiVersions) && n != 4 {
			t.Fatalf("non-flexible header of %d bytes", n)
		}
	})
}

// addressKeys are the decoded keys, those RewriteAddresses handles first in
// the order of rewriteCases; the fuzz target picks one with sel. ApiVersions
// is decoded too but carries no address: RewriteAddresses must refuse it.
var addressKeys = []int16{KeyMetadata, KeyFindCoordinator, KeyDescribeCluster, KeyProduce, KeyFetch, KeyShareFetch, KeyShareAcknowledge, KeyApiVersions}

func FuzzRewriteAddresses(f *testing.F) {
	for i, tc := range rewriteCases() {
		if addressKeys[i] != tc.key {
			f.Fatalf("addressKeys out of step with rewriteCases at %d", i)
		}
		for v := int16(0); v <= maxResponseVersion(tc.key); v++ {
			resp, _ := tc.build(v, upstreamBrokers)
			f.Add(uint8(i), v, resp.AppendTo(nil))
		}
	}
	f.Add(uint8(len(addressKeys)-1), int16(3), apiVersionsUpstream(3).AppendTo(nil))
	f.Fuzz(func(t *testing.T, sel uint8, version int16, body []byte) {
		key := addressKeys[int(sel)%len(addressKeys)]
		// The proxy only decodes versions it advertised: 0..max.
		v := int16(uint16(version) % uint16(maxResponseVersion(key)+1))
		n := heapAllocated(func() {
			if key == KeyApiVersions {
				if out, err := RewriteAddresses(key, v, body, (&recorder{}).mapper); err == nil || out != nil {
					t.Fatalf("ApiVersions v%d: RewriteAddresses gave %x, %v", v, out, err)
				}
				return
			}
			checkRewriteAddresses(t, key, v, body)
		})
		if n > 1<<20+1024*uint64(len(body)) {
			t.Fatalf("%s v%d: allocated %d bytes for a %d-byte body", kmsg.NameForKey(key), v, n, len(body))
		}
	})
}

func FuzzRewriteApiVersions(f *testing.F) {
	for v := int16(0); v <= kmsg.NewPtrApiVersionsResponse().MaxVersion(); v++ {
		f.Add(v, apiVersionsUpstream(v).AppendTo(nil))
	}
	f.Add(int16(3), ApiVersionsFallback())
	// Upstreams with every kind of transaction.version, or none.
	for _, tc := range txnVersionCases {
		f.Add(int16(3), featuresUpstream(3, tc.errCode, tc.epoch, tc.sup, tc.fin).AppendTo(nil))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		v := int16(uint16(version) % uint16(MaxKnownVersion(KeyApiVersions)+1))
		n := heapAllocated(func() { checkRewriteApiVersions(t, v, body) })
		if n > 1<<20+1024*uint64(len(body)) {
			t.Fatalf("v%d: allocated %d bytes for a %d-byte body", v, n, len(body))
		}
	})
}

func FuzzProduceAcks(f *testing.F) {
	for _, v := range []int16{0, 3, 8, 9, kmsg.NewPtrProduceRequest().MaxVersion()} {
		f.Add(v, produceBody(v, nil, -1))
		f.Add(v, produceBody(v, strp("txn-1"), 1))
	}
	f.Add(int16(9), append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 0, 1))
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		n := heapAllocated(func() { checkProduceAcks(t, version, body) })
		if n > 64<<10 {
			t.Fatalf("allocated %d bytes reading acks", n)
		}
	})
}

func FuzzProduceIsTransactional(f *testing.F) {
	for _, v := range []int16{0, 2, 3, 8, 9, 12, kmsg.NewPtrProduceRequest().MaxVersion()} {
		for _, txn := range []*string{nil, strp(""), strp("txn-1")} {
			f.Add(v, produceBody(v, txn, -1))
		}
	}
	f.Add(int16(9), []byte{0x80})
	f.Add(int16(3), []byte{0xff, 0xfe, 0, 1})
	f.Add(int16(14), []byte{2, 'x', 0, 1})
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		var got bool
		n := heapAllocated(func() { got = ProduceIsTransactional(version, body) })
		if n > 64<<10 {
			t.Fatalf("allocated %d bytes reading the transactional id", n)
		}
		checkProduceIsTransactional(t, version, body, got)
	})
}
