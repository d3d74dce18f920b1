package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ProduceAcks reads the acks field of a Produce request body. It sits after
// the transactional id (v3+), whose encoding depends on flexibility (v9+).
func ProduceAcks(version int16, body []byte) (int16, error) {
	off := 0
	switch {
	case version >= 9:
		n, w, err := uvarint(body)
		if err != nil {
			return 0, fmt.Errorf("produce transactional id: %w", err)
		}
		if n > uint64(len(body)) {
			return 0, errors.New("produce transactional id longer than request")
		}
		off = w
		if n > 0 {
			off += int(n - 1)
		}
	case version >= 3:
		if len(body) < 2 {
			return 0, errors.New("produce request too short")
		}
		off = 2
		if n := int16(binary.BigEndian.Uint16(body)); n > 0 {
			off += int(n)
		}
	}
	if off < 0 || off+2 > len(body) {
		return 0, errors.New("produce request too short for acks")
	}
	return int16(binary.BigEndian.Uint16(body[off:])), nil
}

// ProduceIsTransactional reports whether a Produce request body carries a
// transactional id, without decoding the rest.
func ProduceIsTransactional(version int16, body []byte) bool {
	switch {
	case version >= 9:
		n, _, err := uvarint(body)
		return err == nil && n > 0
	case version >= 3:
		return len(body) >= 2 && int16(binary.BigEndian.Uint16(body)) >= 0
	}
	return false
}
