package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Errors returned for frames that cannot be handled. Callers close the
// connection and log them; they never reach a client as a protocol answer
// because Kafka has no error code for a frame it cannot parse.
var (
	ErrFrameTooLarge = errors.New("frame larger than the configured maximum")
	ErrFrameNegative = errors.New("negative frame size")
	ErrShortHeader   = errors.New("frame too short for its header")
)

// growStep bounds how much is allocated ahead of bytes actually received, so a
// peer that announces a 100 MiB frame and then sends nothing costs little.
const growStep = 1 << 20

// ReadFrame reads one size-prefixed frame from r into buf (reused if large
// enough) and returns the frame body without its 4-byte size prefix.
func ReadFrame(r io.Reader, limit int32, buf []byte) ([]byte, error) {
	var sz [4]byte
	if _, err := io.ReadFull(r, sz[:]); err != nil {
		return buf[:0], err
	}
	n := int32(binary.BigEndian.Uint32(sz[:]))
	switch {
	case n < 0:
		return buf[:0], ErrFrameNegative
	case n > limit:
		return buf[:0], fmt.Errorf("%w: %d > %d bytes", ErrFrameTooLarge, n, limit)
	}
	size := int(n)
	if cap(buf) >= size {
		buf = buf[:size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return buf[:0], truncated(err)
		}
		return buf, nil
	}
	buf = buf[:0]
	for len(buf) < size {
		chunk := min(size-len(buf), max(growStep, len(buf)))
		start := len(buf)
		buf = append(buf, make([]byte, chunk)...)
		if _, err := io.ReadFull(r, buf[start:]); err != nil {
			return buf[:0], truncated(err)
		}
	}
	return buf, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated frame: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// RequestHeader is the part of a request header eosproxy routes on.
type RequestHeader struct {
	APIKey        int16
	APIVersion    int16
	CorrelationID int32
	ClientID      string
	// BodyOffset is where the request body starts in the frame. It is -1 when
	// the header's form is not known (an API key newer than eosproxy), which
	// is fine for keys that pass through untouched.
	BodyOffset int
}

// ParseRequestHeader decodes the fixed part of a request header (v1/v2). The
// client id is copied so the frame buffer can be reused.
func ParseRequestHeader(frame []byte) (RequestHeader, error) {
	if len(frame) < 10 {
		return RequestHeader{}, ErrShortHeader
	}
	h := RequestHeader{
		APIKey:        int16(binary.BigEndian.Uint16(frame[0:])),
		APIVersion:    int16(binary.BigEndian.Uint16(frame[2:])),
		CorrelationID: int32(binary.BigEndian.Uint32(frame[4:])),
		BodyOffset:    -1,
	}
	if h.APIVersion < 0 {
		return h, fmt.Errorf("negative api version %d for key %d", h.APIVersion, h.APIKey)
	}
	idLen := int(int16(binary.BigEndian.Uint16(frame[8:])))
	off := 10
	if idLen > 0 {
		if off+idLen > len(frame) {
			return h, fmt.Errorf("%w: client id of %d bytes", ErrShortHeader, idLen)
		}
		h.ClientID = string(frame[off : off+idLen])
		off += idLen
	}
	flexible, known := RequestIsFlexible(h.APIKey, h.APIVersion)
	if !known {
		return h, nil
	}
	if flexible {
		n, err := skipTags(frame[off:])
		if err != nil {
			return h, fmt.Errorf("request header tags: %w", err)
		}
		off += n
	}
	h.BodyOffset = off
	return h, nil
}

// ResponseHeaderLen returns the length of the response header that precedes
// the body for a response to (key, version): the correlation id, plus the
// tag section for flexible responses. ApiVersions always uses header v0 so
// that a client can parse it before it knows the broker's versions.
func ResponseHeaderLen(key, version int16, body []byte) (int, error) {
	if len(body) < 4 {
		return 0, ErrShortHeader
	}
	flexible, _ := RequestIsFlexible(key, version)
	if !flexible || key == KeyApiVersions {
		return 4, nil
	}
	n, err := skipTags(body[4:])
	if err != nil {
		return 0, fmt.Errorf("response header tags: %w", err)
	}
	return 4 + n, nil
}

// skipTags returns the length of a tagged-field section at the start of b.
func skipTags(b []byte) (int, error) {
	num, off, err := uvarint(b)
	if err != nil {
		return 0, err
	}
	if num > uint64(len(b)) {
		return 0, errors.New("tag count larger than frame")
	}
	for i := uint64(0); i < num; i++ {
		_, n, err := uvarint(b[off:])
		if err != nil {
			return 0, err
		}
		off += n
		size, n, err := uvarint(b[off:])
		if err != nil {
			return 0, err
		}
		off += n
		if size > uint64(len(b)-off) {
			return 0, errors.New("tag longer than frame")
		}
		off += int(size)
	}
	return off, nil
}

func uvarint(b []byte) (uint64, int, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, 0, errors.New("bad unsigned varint")
	}
	return v, n, nil
}

// AppendFrame appends a size-prefixed frame made of the given parts.
func AppendFrame(dst []byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}
