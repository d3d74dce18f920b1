package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// sizePrefixed returns body preceded by its 4-byte big-endian length.
func sizePrefixed(body []byte) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(len(body)))
}

func frameOf(body []byte) []byte { return append(sizePrefixed(body), body...) }

// rawSize returns a 4-byte size prefix holding n as is (it may be negative).
func rawSize(n int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }

// chunkReader returns at most n bytes per Read, like a slow TCP peer.
type chunkReader struct {
	r     io.Reader
	n     int
	reads int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	c.reads++
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// errAfterReader returns its data and then err instead of io.EOF.
type errAfterReader struct {
	data []byte
	err  error
}

func (e *errAfterReader) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestReadFrameExact(t *testing.T) {
	bodies := [][]byte{
		{},
		{0x42},
		[]byte("hello, kafka"),
		bytes.Repeat([]byte{0xA5}, 4096),
		bytes.Repeat([]byte("0123456789"), 100_000), // 1 MB: crosses growStep
	}
	for _, body := range bodies {
		for _, buf := range [][]byte{nil, make([]byte, 0, 16), make([]byte, 0, 2<<20)} {
			t.Run(fmt.Sprintf("len%d/cap%d", len(body), cap(buf)), func(t *testing.T) {
				// Two frames back to back, then a clean EOF.
				stream := append(frameOf(body), frameOf([]byte("next"))...)
				r := bytes.NewReader(stream)
				got, err := ReadFrame(r, 4<<20, buf)
				if err != nil {
					t.Fatalf("ReadFrame: %v", err)
				}
				if !bytes.Equal(got, body) {
					t.Fatalf("frame = %d bytes, want %d bytes equal to the body", len(got), len(body))
				}
				got, err = ReadFrame(r, 4<<20, got)
				if err != nil {
					t.Fatalf("second ReadFrame: %v", err)
				}
				if string(got) != "next" {
					t.Fatalf("second frame = %q, want %q", got, "next")
				}
				if _, err := ReadFrame(r, 4<<20, got); err != io.EOF {
					t.Fatalf("ReadFrame at end = %v, want io.EOF", err)
				}
			})
		}
	}
}

func TestReadFrameLimitBoundary(t *testing.T) {
	body := bytes.Repeat([]byte{7}, 100)
	got, err := ReadFrame(bytes.NewReader(frameOf(body)), 100, nil)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("frame of exactly the limit: %d bytes, %v", len(got), err)
	}
	_, err = ReadFrame(bytes.NewReader(frameOf(append(body, 8))), 100, nil)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("frame one byte over the limit: err = %v, want ErrFrameTooLarge", err)
	}
}

func TestReadFrameReusesBuffer(t *testing.T) {
	buf := make([]byte, 0, 64)
	body := []byte("reuse me please")
	got, err := ReadFrame(bytes.NewReader(frameOf(body)), 1024, buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("got %q", got)
	}
	if &got[0] != &buf[:1][0] {
		t.Fatal("a buffer with enough capacity was not reused")
	}
	if cap(got) != cap(buf) {
		t.Fatalf("cap = %d, want %d", cap(got), cap(buf))
	}

	// A buffer of exactly the frame's size is reused too.
	exact := make([]byte, 0, len(body))
	got, err = ReadFrame(bytes.NewReader(frameOf(body)), 1024, exact)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("exact buffer: %q, %v", got, err)
	}
	if &got[0] != &exact[:1][0] {
		t.Fatal("a buffer of exactly the frame's size was not reused")
	}

	// A buffer too small for the frame is replaced; the caller's buffer is
	// left alone beyond its length.
	small := make([]byte, 0, 4)
	got, err = ReadFrame(bytes.NewReader(frameOf(body)), 1024, small)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("small buffer: %q, %v", got, err)
	}

	// Reading many frames into the returned buffer keeps giving the
	// right bytes (no stale tail from a longer previous frame).
	var stream []byte
	var want [][]byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		b := make([]byte, rng.IntN(300))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		want = append(want, b)
		stream = append(stream, frameOf(b)...)
	}
	r := bytes.NewReader(stream)
	var cur []byte
	for i, w := range want {
		cur, err = ReadFrame(r, 1024, cur[:0])
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(cur, w) {
			t.Fatalf("frame %d: got %d bytes, want %d", i, len(cur), len(w))
		}
	}
}

func TestReadFrameErrors(t *testing.T) {
	boom := errors.New("connection reset by test")
	cases := []struct {
		name   string
		r      func() io.Reader
		limit  int32
		is     error
		substr string
	}{
		{name: "empty stream", r: func() io.Reader { return bytes.NewReader(nil) }, limit: 100, is: io.EOF},
		{name: "one byte of size", r: func() io.Reader { return bytes.NewReader([]byte{0}) }, limit: 100, is: io.ErrUnexpectedEOF},
		{name: "three bytes of size", r: func() io.Reader { return bytes.NewReader([]byte{0, 0, 0}) }, limit: 100, is: io.ErrUnexpectedEOF},
		{name: "too large", r: func() io.Reader { return bytes.NewReader(frameOf(make([]byte, 101))) }, limit: 100, is: ErrFrameTooLarge, substr: "101"},
		{name: "too large, no body sent", r: func() io.Reader { return bytes.NewReader(rawSize(math.MaxInt32)) }, limit: 100 << 20, is: ErrFrameTooLarge},
		{name: "limit zero", r: func() io.Reader { return bytes.NewReader(frameOf([]byte{1})) }, limit: 0, is: ErrFrameTooLarge},
		{name: "negative -1", r: func() io.Reader { return bytes.NewReader(rawSize(-1)) }, limit: 100, is: ErrFrameNegative},
		{name: "negative min", r: func() io.Reader { return bytes.NewReader(rawSize(math.MinInt32)) }, limit: math.MaxInt32, is: ErrFrameNegative},
		{name: "truncated body", r: func() io.Reader { return bytes.NewReader(append(rawSize(10), 1, 2, 3)) }, limit: 100, is: io.ErrUnexpectedEOF},
		{name: "size only", r: func() io.Reader { return bytes.NewReader(rawSize(10)) }, limit: 100, is: io.ErrUnexpectedEOF},
		{name: "truncated large body", r: func() io.Reader { return bytes.NewReader(append(rawSize(3<<20), make([]byte, 1<<20+5)...)) }, limit: 8 << 20, is: io.ErrUnexpectedEOF},
		{name: "read error in size", r: func() io.Reader { return &errAfterReader{data: []byte{0, 0}, err: boom} }, limit: 100, is: boom},
		{name: "read error in body", r: func() io.Reader { return &errAfterReader{data: append(rawSize(10), 1, 2), err: boom} }, limit: 100, is: boom},
		{name: "read error in grown body", r: func() io.Reader {
			return &errAfterReader{data: append(rawSize(3<<20), make([]byte, 2<<20)...), err: boom}
		}, limit: 8 << 20, is: boom},
	}
	for _, tc := range cases {
		for _, buf := range [][]byte{nil, make([]byte, 0, 64)} {
			t.Run(fmt.Sprintf("%s/cap%d", tc.name, cap(buf)), func(t *testing.T) {
				got, err := ReadFrame(tc.r(), tc.limit, buf)
				if !errors.Is(err, tc.is) {
					t.Fatalf("err = %v, want errors.Is %v", err, tc.is)
				}
				if tc.is == io.EOF && err != io.EOF {
					t.Fatalf("EOF at a frame boundary must be io.EOF itself, got %v", err)
				}
				if tc.is != io.EOF && errors.Is(err, io.EOF) {
					t.Fatalf("mid-frame error %v must not be io.EOF (a clean close)", err)
				}
				if tc.substr != "" && !strings.Contains(err.Error(), tc.substr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.substr)
				}
				if len(got) != 0 {
					t.Fatalf("a failed read returned %d bytes", len(got))
				}
			})
		}
	}
}

func TestReadFrameSlowReaderIncrementalGrowth(t *testing.T) {
	const size = 5 << 20
	body := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	stream := append(frameOf(body), frameOf([]byte("tail"))...)
	for _, chunk := range []int{4093, 65536} {
		t.Run(fmt.Sprintf("chunk%d", chunk), func(t *testing.T) {
			r := &chunkReader{r: bytes.NewReader(stream), n: chunk}
			got, err := ReadFrame(r, 16<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != size {
				t.Fatalf("len = %d, want %d", len(got), size)
			}
			if !bytes.Equal(got, body) {
				for i := range got {
					if got[i] != body[i] {
						t.Fatalf("first difference at byte %d", i)
					}
				}
			}
			if r.reads < size/chunk {
				t.Fatalf("only %d reads for %d bytes in chunks of %d", r.reads, size, chunk)
			}
			// The reader is left exactly at the next frame.
			got, err = ReadFrame(r, 16<<20, got)
			if err != nil || string(got) != "tail" {
				t.Fatalf("next frame = %q, %v", got, err)
			}
		})
	}
}

// allocatedBy returns the bytes allocated on the heap while f runs.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestReadFrameAnnouncedButNotSentDoesNotAllocate(t *testing.T) {
	for _, announced := range []int32{50 << 20, math.MaxInt32 - 1} {
		t.Run(fmt.Sprint(announced), func(t *testing.T) {
			in := append(rawSize(announced), []byte("0123456789")...)
			var err error
			n := allocatedBy(func() {
				_, err = ReadFrame(bytes.NewReader(in), math.MaxInt32, nil)
			})
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
			}
			if n > 4<<20 {
				t.Fatalf("a frame announcing %d bytes with 10 sent allocated %d bytes", announced, n)
			}
		})
	}
	// The same through a slow reader.
	in := append(rawSize(50<<20), make([]byte, 3<<20)...)
	var err error
	n := allocatedBy(func() {
		_, err = ReadFrame(&chunkReader{r: bytes.NewReader(in), n: 8192}, math.MaxInt32, nil)
	})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if n > 24<<20 {
		t.Fatalf("3 MiB sent of an announced 50 MiB allocated %d bytes", n)
	}
}

// --- request headers ---

// encodeRequestHeader builds a request header v1 (flexible=false) or v2
// (flexible=true, empty tag section). A nil clientID is the null string.
func encodeRequestHeader(key, version int16, corr int32, clientID *string, flexible bool) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	if clientID == nil {
		b = binary.BigEndian.AppendUint16(b, 0xffff)
	} else {
		b = binary.BigEndian.AppendUint16(b, uint16(len(*clientID)))
		b = append(b, *clientID...)
	}
	if flexible {
		b = append(b, 0)
	}
	return b
}

// kmsgFlexible reports whether kmsg encodes (key, version) requests flexibly,
// computed independently of versions.go.
func kmsgFlexible(key, version int16) bool {
	req := kmsg.RequestForKey(key)
	req.SetVersion(version)
	return req.IsFlexible()
}

func kmsgFirstFlexible(key int16) int16 {
	req := kmsg.RequestForKey(key)
	for v := int16(0); v <= req.MaxVersion(); v++ {
		req.SetVersion(v)
		if req.IsFlexible() {
			return v
		}
	}
	return -1
}

func knownKeys() []int16 {
	var keys []int16
	for k := int16(0); k < 1024; k++ {
		if kmsg.RequestForKey(k) != nil {
			keys = append(keys, k)
		}
	}
	return keys
}

func strp(s string) *string { return &s }

func TestParseRequestHeaderEveryKnownKey(t *testing.T) {
	keys := knownKeys()
	if len(keys) < 80 {
		t.Fatalf("kmsg knows only %d keys?", len(keys))
	}
	clientIDs := []*string{strp("my-client-7"), nil, strp("")}
	for _, key := range keys {
		maxV := kmsg.RequestForKey(key).MaxVersion()
		versions := map[int16]bool{0: true, maxV: true}
		if f := kmsgFirstFlexible(key); f >= 0 {
			versions[f] = true
			if f > 0 {
				versions[f-1] = true
			}
		}
		for v := range versions {
			for ci, cid := range clientIDs {
				name := fmt.Sprintf("%s/v%d/cid%d", kmsg.NameForKey(key), v, ci)
				t.Run(name, func(t *testing.T) {
					req := kmsg.RequestForKey(key)
					req.SetVersion(v)
					body := req.AppendTo(nil)
					corr := int32(0x7eadbeef) - int32(key)*31 - int32(v)
					frame := append(encodeRequestHeader(key, v, corr, cid, kmsgFlexible(key, v)), body...)
					h, err := ParseRequestHeader(frame)
					if err != nil {
						t.Fatalf("ParseRequestHeader: %v", err)
					}
					wantID := ""
					if cid != nil {
						wantID = *cid
					}
					if h.APIKey != key || h.APIVersion != v || h.CorrelationID != corr || h.ClientID != wantID {
						t.Fatalf("header = %+v, want key %d v%d corr %d client %q", h, key, v, corr, wantID)
					}
					if h.BodyOffset < 0 || h.BodyOffset > len(frame) {
						t.Fatalf("BodyOffset = %d out of frame of %d", h.BodyOffset, len(frame))
					}
					if want := len(frame) - len(body); h.BodyOffset != want {
						t.Fatalf("BodyOffset = %d, want %d", h.BodyOffset, want)
					}
					// The body at BodyOffset decodes as the request.
					dec := kmsg.RequestForKey(key)
					dec.SetVersion(v)
					if err := dec.ReadFrom(frame[h.BodyOffset:]); err != nil {
						t.Fatalf("body at BodyOffset does not decode: %v", err)
					}
					// The client id is a copy, not an alias of the frame.
					for i := range frame {
						frame[i] = 'X'
					}
					if h.ClientID != wantID {
						t.Fatalf("client id changed with the frame buffer: %q", h.ClientID)
					}
				})
			}
		}
	}
}

func TestParseRequestHeaderVersionAboveKnown(t *testing.T) {
	// A version newer than kmsg knows: flexible when the key has ever been
	// flexible (flexibility is never withdrawn).
	for _, key := range []int16{KeyProduce, KeyFetch, KeyMetadata, KeyApiVersions, 22, 26} {
		v := kmsg.RequestForKey(key).MaxVersion() + 1
		body := []byte{1, 2, 3}
		frame := append(encodeRequestHeader(key, v, 5, strp("c"), true), body...)
		h, err := ParseRequestHeader(frame)
		if err != nil {
			t.Fatalf("key %d v%d: %v", key, v, err)
		}
		if h.BodyOffset != len(frame)-len(body) {
			t.Fatalf("key %d v%d: BodyOffset = %d, want %d", key, v, h.BodyOffset, len(frame)-len(body))
		}
	}
	// SASLHandshake has never been flexible.
	v := kmsg.RequestForKey(17).MaxVersion() + 1
	frame := append(encodeRequestHeader(17, v, 5, strp("c"), false), 0, 5, 'P', 'L', 'A', 'I', 'N')
	h, err := ParseRequestHeader(frame)
	if err != nil || h.BodyOffset != 11 {
		t.Fatalf("SASLHandshake v%d: %+v, %v", v, h, err)
	}
}

func TestParseRequestHeaderUnknownKey(t *testing.T) {
	for _, key := range []int16{999, 1023, 4000, math.MaxInt16, -1, -200} {
		frame := append(encodeRequestHeader(key, 3, 77, strp("cli"), false), 0xde, 0xad)
		// Negative keys are unknown too; they must not index the table.
		h, err := ParseRequestHeader(frame)
		if err != nil {
			t.Fatalf("key %d: %v", key, err)
		}
		if h.BodyOffset != -1 {
			t.Fatalf("key %d: BodyOffset = %d, want -1", key, h.BodyOffset)
		}
		if h.APIKey != key || h.APIVersion != 3 || h.CorrelationID != 77 || h.ClientID != "cli" {
			t.Fatalf("key %d: header = %+v", key, h)
		}
	}
}

// tagSection encodes a tagged-field section with the given (tag, data) pairs.
func tagSection(tags ...[]byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(tags)))
	for i, d := range tags {
		b = binary.AppendUvarint(b, uint64(i*3))
		b = binary.AppendUvarint(b, uint64(len(d)))
		b = append(b, d...)
	}
	return b
}

func TestParseRequestHeaderWithTags(t *testing.T) {
	big := bytes.Repeat([]byte{9}, 300) // two-byte uvarint length
	for _, tags := range [][][]byte{
		{[]byte("abc")},
		{{}, []byte("x"), big},
	} {
		hdr := encodeRequestHeader(KeyMetadata, 12, 99, strp("tagger"), false)
		ts := tagSection(tags...)
		body := kmsg.NewPtrMetadataRequest()
		body.SetVersion(12)
		b := body.AppendTo(nil)
		frame := append(append(hdr, ts...), b...)
		h, err := ParseRequestHeader(frame)
		if err != nil {
			t.Fatal(err)
		}
		if h.BodyOffset != len(hdr)+len(ts) {
			t.Fatalf("BodyOffset = %d, want %d", h.BodyOffset, len(hdr)+len(ts))
		}
		if h.ClientID != "tagger" || h.CorrelationID != 99 {
			t.Fatalf("header = %+v", h)
		}
	}
}

func TestParseRequestHeaderMalformed(t *testing.T) {
	valid := encodeRequestHeader(KeyMetadata, 12, 1, strp("abc"), true)
	cases := []struct {
		name  string
		frame []byte
		is    error // nil: any error
	}{
		{"empty", nil, ErrShortHeader},
		{"nine bytes", valid[:9], ErrShortHeader},
		{"client id cut", valid[:12], ErrShortHeader},
		{"client id longer than frame", append(encodeRequestHeader(KeyProduce, 3, 1, nil, false)[:8], 0x7f, 0xff, 'a'), ErrShortHeader},
		{"negative version", encodeRequestHeader(KeyProduce, -1, 1, nil, false), nil},
		{"negative version, unknown key", encodeRequestHeader(999, -3, 1, nil, false), nil},
		{"flexible without tag section", valid[:len(valid)-1], nil},
		{"tag count larger than frame", append(valid[:len(valid)-1], 0x7f), nil},
		{"tag count huge varint", append(valid[:len(valid)-1], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), nil},
		{"varint overflow", append(valid[:len(valid)-1], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), nil},
		{"tag without size", append(valid[:len(valid)-1], 1, 0), nil},
		{"tag id cut", append(valid[:len(valid)-1], 1, 0x80), nil},
		{"tag longer than frame", append(valid[:len(valid)-1], 1, 0, 5, 'a', 'b'), nil},
		{"tag size huge", append(valid[:len(valid)-1], 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f), nil},
		{"second tag missing", append(valid[:len(valid)-1], 2, 0, 1, 'a'), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseRequestHeader(tc.frame)
			if err == nil {
				t.Fatalf("no error, header %+v", h)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want errors.Is %v", err, tc.is)
			}
		})
	}
}

func TestParseRequestHeaderGarbageNeverPanics(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20000; i++ {
		frame := make([]byte, rng.IntN(40))
		for j := range frame {
			frame[j] = byte(rng.Uint32())
		}
		if len(frame) >= 2 && rng.IntN(2) == 0 {
			// Mostly known keys, so the tag path gets exercised.
			binary.BigEndian.PutUint16(frame, uint16(rng.IntN(100)))
		}
		if len(frame) >= 10 && rng.IntN(2) == 0 {
			binary.BigEndian.PutUint16(frame[8:], uint16(rng.IntN(len(frame)))-1)
		}
		checkRequestHeaderInvariants(t, frame)
	}
}

func checkRequestHeaderInvariants(t *testing.T, frame []byte) {
	t.Helper()
	h, err := ParseRequestHeader(frame)
	if err != nil {
		return
	}
	if len(frame) < 10 {
		t.Fatalf("frame of %d bytes parsed without error", len(frame))
	}
	if h.BodyOffset != -1 && (h.BodyOffset < 10 || h.BodyOffset > len(frame)) {
		t.Fatalf("frame %x: BodyOffset %d out of range", frame, h.BodyOffset)
	}
	if _, known := RequestIsFlexible(h.APIKey, h.APIVersion); known != (h.BodyOffset >= 0) {
		t.Fatalf("frame %x: known=%v but BodyOffset %d", frame, known, h.BodyOffset)
	}
	if h.APIVersion < 0 {
		t.Fatalf("frame %x: negative version accepted", frame)
	}
	if len(h.ClientID) > len(frame)-10 {
		t.Fatalf("frame %x: client id longer than the frame", frame)
	}
}

// --- response headers ---

func TestResponseHeaderLenEveryKnownKey(t *testing.T) {
	for _, key := range knownKeys() {
		maxV := kmsg.ResponseForKey(key).MaxVersion()
		for v := int16(0); v <= maxV; v++ {
			resp := kmsg.ResponseForKey(key)
			resp.SetVersion(v)
			body := resp.AppendTo(nil)
			hdr := binary.BigEndian.AppendUint32(nil, 0x01020304)
			if resp.IsFlexible() && key != KeyApiVersions {
				hdr = append(hdr, 0)
			}
			n, err := ResponseHeaderLen(key, v, append(hdr, body...))
			if err != nil {
				t.Fatalf("%s v%d: %v", kmsg.NameForKey(key), v, err)
			}
			if n != len(hdr) {
				t.Fatalf("%s v%d: header length %d, want %d", kmsg.NameForKey(key), v, n, len(hdr))
			}
		}
	}
}

func TestResponseHeaderLen(t *testing.T) {
	corr := []byte{0, 0, 0, 9}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	cases := []struct {
		name     string
		key, ver int16
		resp     []byte
		want     int
		wantErr  bool
	}{
		// ApiVersions answers with header v0 at every version, even v3+
		// whose body is flexible; its body starts with the error code.
		{"ApiVersions v0", KeyApiVersions, 0, cat(corr, []byte{0, 0}), 4, false},
		{"ApiVersions v3", KeyApiVersions, 3, cat(corr, []byte{0, 0, 5}), 4, false},
		{"ApiVersions v3 body looks like tags", KeyApiVersions, 3, cat(corr, []byte{2, 0, 1, 0, 1, 0}), 4, false},
		{"ApiVersions v5", KeyApiVersions, 5, cat(corr, []byte{0, 35}), 4, false},
		{"ApiVersions v99", KeyApiVersions, 99, cat(corr, []byte{0x7f}), 4, false},
		{"ApiVersions only corr", KeyApiVersions, 3, corr, 4, false},
		{"Metadata v8 non-flexible", KeyMetadata, 8, cat(corr, []byte{3, 1, 2, 3}), 4, false},
		{"Metadata v9 empty tags", KeyMetadata, 9, cat(corr, []byte{0}, []byte{9, 9}), 5, false},
		{"Metadata v13 tags", KeyMetadata, 13, cat(corr, tagSection([]byte("abc"), nil), []byte{1}), 4 + len(tagSection([]byte("abc"), nil)), false},
		{"Produce v9 big tag", KeyProduce, 9, cat(corr, tagSection(bytes.Repeat([]byte{1}, 200))), 4 + len(tagSection(bytes.Repeat([]byte{1}, 200))), false},
		{"Fetch v11 non-flexible", KeyFetch, 11, cat(corr, []byte{0xff}), 4, false},
		{"Fetch v12 flexible", KeyFetch, 12, cat(corr, []byte{0}), 5, false},
		{"FindCoordinator above max is flexible", KeyFindCoordinator, 50, cat(corr, []byte{0}), 5, false},
		{"DescribeCluster v0", KeyDescribeCluster, 0, cat(corr, tagSection([]byte{1})), 4 + len(tagSection([]byte{1})), false},
		{"SASLHandshake never flexible", 17, 1, cat(corr, []byte{0xff}), 4, false},
		{"unknown key", 999, 5, cat(corr, []byte{0xff}), 4, false},
		{"negative key", -5, 5, corr, 4, false},
		{"empty", KeyMetadata, 3, nil, 0, true},
		{"short corr", KeyMetadata, 3, []byte{0, 0, 1}, 0, true},
		{"short corr ApiVersions", KeyApiVersions, 0, []byte{0, 0, 1}, 0, true},
		{"flexible without tags", KeyMetadata, 12, corr, 0, true},
		{"flexible tag count too big", KeyMetadata, 12, cat(corr, []byte{5, 0}), 0, true},
		{"flexible tag too long", KeyMetadata, 12, cat(corr, []byte{1, 0, 9, 1}), 0, true},
		{"flexible bad varint", KeyMetadata, 12, cat(corr, []byte{0x80}), 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ResponseHeaderLen(tc.key, tc.ver, tc.resp)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, length %d", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.want {
				t.Fatalf("length = %d, want %d", n, tc.want)
			}
		})
	}
}

// --- skipTags, AppendFrame ---

func TestSkipTags(t *testing.T) {
	cases := []struct {
		in      []byte
		want    int
		wantErr bool
	}{
		{in: []byte{0}, want: 1},
		{in: []byte{0, 1, 2}, want: 1},
		{in: tagSection([]byte("hello")), want: len(tagSection([]byte("hello")))},
		{in: append(tagSection(nil, nil, []byte("z")), 0xff), want: len(tagSection(nil, nil, []byte("z")))},
		{in: nil, wantErr: true},
		{in: []byte{0x80}, wantErr: true},
		{in: []byte{1}, wantErr: true},
		{in: []byte{1, 0}, wantErr: true},
		{in: []byte{1, 0, 1}, wantErr: true},
		{in: []byte{2, 0, 0}, wantErr: true},
		{in: []byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, wantErr: true},
	}
	for _, tc := range cases {
		n, err := skipTags(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && n != tc.want) {
			t.Errorf("skipTags(%x) = %d, %v; want %d, err %v", tc.in, n, err, tc.want, tc.wantErr)
		}
	}
}

func TestAppendFrame(t *testing.T) {
	got := AppendFrame([]byte("pre"), []byte("ab"), nil, []byte("cde"))
	want := append([]byte("pre"), 0, 0, 0, 5, 'a', 'b', 'c', 'd', 'e')
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendFrame = %x, want %x", got, want)
	}
	if got := AppendFrame(nil); !bytes.Equal(got, []byte{0, 0, 0, 0}) {
		t.Fatalf("empty frame = %x", got)
	}
	// What AppendFrame writes, ReadFrame reads back.
	body := bytes.Repeat([]byte("xyz"), 1000)
	f := AppendFrame(nil, body[:10], body[10:])
	back, err := ReadFrame(bytes.NewReader(f), 1<<20, nil)
	if err != nil || !bytes.Equal(back, body) {
		t.Fatalf("round trip: %d bytes, %v", len(back), err)
	}
}

// --- versions ---

func TestVersionTablesMatchKmsg(t *testing.T) {
	known := map[int16]bool{}
	for _, key := range knownKeys() {
		known[key] = true
		req := kmsg.RequestForKey(key)
		maxV := req.MaxVersion()
		if got := MaxKnownVersion(key); got != maxV {
			t.Errorf("MaxKnownVersion(%d) = %d, want %d", key, got, maxV)
		}
		first := kmsgFirstFlexible(key)
		for v := int16(0); v <= maxV+3; v++ {
			want := first >= 0 && v >= first
			if v <= maxV {
				want = kmsgFlexible(key, v)
			}
			flex, ok := RequestIsFlexible(key, v)
			if !ok || flex != want {
				t.Errorf("RequestIsFlexible(%d, %d) = %v, %v; want %v, true", key, v, flex, ok, want)
			}
			// Responses share the requests' flexible versions; the
			// response header code relies on it.
			if v <= maxV {
				resp := kmsg.ResponseForKey(key)
				resp.SetVersion(v)
				if resp.IsFlexible() != want {
					t.Errorf("%s v%d: response flexible %v, request %v", kmsg.NameForKey(key), v, resp.IsFlexible(), want)
				}
			}
		}
	}
	for _, key := range []int16{-1, math.MinInt16, 999, 1023, 1024, math.MaxInt16} {
		if known[key] {
			continue
		}
		if flex, ok := RequestIsFlexible(key, 5); flex || ok {
			t.Errorf("RequestIsFlexible(%d) = %v, %v for an unknown key", key, flex, ok)
		}
		if v := MaxKnownVersion(key); v != -1 {
			t.Errorf("MaxKnownVersion(%d) = %d, want -1", key, v)
		}
	}
	// Spot checks, independent of kmsg: these are in the Kafka protocol.
	spot := []struct {
		key, ver int16
		flex     bool
	}{
		{KeyProduce, 8, false}, {KeyProduce, 9, true},
		{KeyFetch, 11, false}, {KeyFetch, 12, true},
		{KeyMetadata, 8, false}, {KeyMetadata, 9, true},
		{KeyFindCoordinator, 2, false}, {KeyFindCoordinator, 3, true},
		{KeyApiVersions, 2, false}, {KeyApiVersions, 3, true},
		{KeyDescribeCluster, 0, true},
		{22, 1, false}, {22, 2, true}, // InitProducerId
		{26, 2, false}, {26, 3, true}, // EndTxn
	}
	for _, s := range spot {
		if flex, _ := RequestIsFlexible(s.key, s.ver); flex != s.flex {
			t.Errorf("RequestIsFlexible(%d, %d) = %v, want %v", s.key, s.ver, flex, s.flex)
		}
	}
}

func TestIsDecoded(t *testing.T) {
	want := map[int16]bool{
		KeyProduce: true, KeyFetch: true, KeyMetadata: true, KeyFindCoordinator: true,
		KeyApiVersions: true, KeyDescribeCluster: true, KeyShareFetch: true, KeyShareAcknowledge: true,
		KeyOffsetFetch: true,
	}
	for k := int16(-2); k < 1100; k++ {
		if IsDecoded(k) != want[k] {
			t.Errorf("IsDecoded(%d) = %v, want %v", k, IsDecoded(k), want[k])
		}
	}
	// Each decoded key must be one eosproxy can decode at some version.
	for k := range want {
		if MaxKnownVersion(k) < 0 {
			t.Errorf("decoded key %d unknown to kmsg", k)
		}
	}
}

// MaxProxyVersion, by hand: the caps are eosproxy's choices, not kmsg's.
func TestMaxProxyVersion(t *testing.T) {
	caps := map[int16]int16{
		KeyProduce:          12, // v13 names topics by id
		KeyFetch:            15, // v16+ responses cannot stream
		KeyAddPartitionsTxn: 3,  // v4+ is broker-to-coordinator
		KeyTxnOffsetCommit:  5,  // v6 names topics by id
		KeyOffsetFetch:      9,  // v10 names topics by id
	}
	for k := int16(-2); k < 1100; k++ {
		want := MaxKnownVersion(k)
		if c, ok := caps[k]; ok {
			if want < c {
				t.Errorf("key %d: kmsg knows up to v%d, below eosproxy's cap v%d", k, want, c)
			}
			want = c
		}
		if got := MaxProxyVersion(k); got != want {
			t.Errorf("MaxProxyVersion(%d) = %d, want %d", k, got, want)
		}
	}
}

// eosproxy answers the transaction coordinator's keys itself, and besides
// them only InitProducerId and DescribeProducers.
func TestAnsweredLocally(t *testing.T) {
	want := map[int16]bool{22: true, 24: true, 25: true, 26: true, 28: true, 61: true, 65: true, 66: true}
	local := map[int16]bool{}
	for _, k := range AnsweredLocally {
		if local[k] {
			t.Errorf("key %d listed twice in AnsweredLocally", k)
		}
		local[k] = true
		if !want[k] {
			t.Errorf("key %d answered locally but not a coordinator key", k)
		}
		if MaxProxyVersion(k) < 0 {
			t.Errorf("key %d answered locally but unknown to kmsg", k)
		}
	}
	for k := range want {
		if !local[k] {
			t.Errorf("key %d not in AnsweredLocally", k)
		}
	}
}
