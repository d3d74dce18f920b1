package protocol

import (
	"encoding/binary"
	"errors"
)

// errScan reports a response body that ends inside a field.
var errScan = errors.New("response body shorter than its fields")

// MayCarryAddresses reports whether a response body to (key, version) can
// contain broker addresses and so must go through RewriteAddresses. Produce
// (v10+) and Fetch (v16+) carry node endpoints only after a leader change
// (KIP-951): their bodies are walked without decoding or allocating, so the
// hot path pays a scan, not a decode and re-encode. Other decoded keys always
// carry addresses.
func MayCarryAddresses(key, version int16, body []byte) (bool, error) {
	if !AddressesPossible(key, version) {
		return false, nil
	}
	switch key {
	case KeyProduce:
		return scanProduce(version, body)
	case KeyFetch:
		return scanFetch(body)
	}
	return true, nil
}

// AddressesPossible reports whether any response to (key, version) can name
// a broker; when not, the response can be streamed through untouched.
func AddressesPossible(key, version int16) bool {
	switch key {
	case KeyProduce:
		return version >= 10
	case KeyFetch:
		return version >= 16
	}
	return IsDecoded(key) && key != KeyApiVersions && key != KeyOffsetFetch
}

// scanner walks flexible-version fields; after the first overrun every call
// is a no-op and err is set.
type scanner struct {
	b   []byte
	err error
}

func (s *scanner) skip(n int) {
	if s.err != nil {
		return
	}
	if n < 0 || n > len(s.b) {
		s.err = errScan
		return
	}
	s.b = s.b[n:]
}

func (s *scanner) uvarint() uint64 {
	if s.err != nil {
		return 0
	}
	v, n := binary.Uvarint(s.b)
	if n <= 0 {
		s.err = errScan
		return 0
	}
	s.b = s.b[n:]
	return v
}

// count reads a compact array length (stored +1; 0 is null) and bounds it by
// the bytes left, so a lying length cannot make a caller loop for long.
func (s *scanner) count() int {
	n := s.uvarint()
	if n == 0 {
		return 0
	}
	if n-1 > uint64(len(s.b)) {
		s.err = errScan
		return 0
	}
	return int(n - 1)
}

// skipCompact skips a compact (nullable) string or bytes.
func (s *scanner) skipCompact() { s.skip(s.count()) }

// tags skips a tag section and reports whether it holds tag 0.
func (s *scanner) tags() (hasZero bool) {
	n := s.uvarint() // plain, not +1
	if n > uint64(len(s.b)) {
		s.err = errScan
		return false
	}
	for ; n > 0 && s.err == nil; n-- {
		key := s.uvarint()
		size := s.uvarint() // plain, not +1
		if size > uint64(len(s.b)) {
			s.err = errScan
			break
		}
		hasZero = hasZero || key == 0
		s.skip(int(size))
	}
	return hasZero
}

func scanFetch(body []byte) (bool, error) {
	s := &scanner{b: body}
	s.skip(4 + 2 + 4) // throttle, error code, session id
	for topics := s.count(); topics > 0 && s.err == nil; topics-- {
		s.skip(16) // topic id (v13+)
		for parts := s.count(); parts > 0 && s.err == nil; parts-- {
			s.skip(4 + 2 + 8 + 8 + 8) // partition, error, high watermark, LSO, log start
			for aborted := s.count(); aborted > 0 && s.err == nil; aborted-- {
				s.skip(8 + 8)
				s.tags()
			}
			s.skip(4) // preferred read replica
			s.skipCompact()
			s.tags()
		}
		s.tags()
	}
	has := s.tags()
	return has, s.err
}

func scanProduce(version int16, body []byte) (bool, error) {
	s := &scanner{b: body}
	for topics := s.count(); topics > 0 && s.err == nil; topics-- {
		if version >= 13 {
			s.skip(16)
		} else {
			s.skipCompact()
		}
		for parts := s.count(); parts > 0 && s.err == nil; parts-- {
			s.skip(4 + 2 + 8 + 8 + 8) // partition, error, base offset, append time, log start
			for errs := s.count(); errs > 0 && s.err == nil; errs-- {
				s.skip(4)
				s.skipCompact()
				s.tags()
			}
			s.skipCompact() // error message
			s.tags()
		}
		s.tags()
	}
	s.skip(4) // throttle
	has := s.tags()
	return has, s.err
}
