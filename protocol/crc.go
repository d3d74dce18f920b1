package protocol

// eosproxy rewrites a few header fields of batches it forwards (producer
// id, epoch, base sequence; the transactional bit) and must then give the
// batch a new CRC-32C. Computing it afresh reads every record byte again,
// a tenth of eosproxy's CPU under transactions. The CRC is linear over
// GF(2): for two messages of the same length, crc(a) xor crc(b) is the
// unconditioned CRC of a xor b. The difference is zero except in the
// header, so the new CRC is the old one xor the unconditioned CRC of the
// changed header bytes, carried over the zero bytes after them, which is
// a multiplication by x^(8n) modulo the polynomial: O(log n), whatever the
// batch's size.
//
// Polynomials are in the reflected form Castagnoli's CRC uses: the top bit
// (0x80000000) is x^0, the lowest x^31.

import (
	"encoding/binary"
	"hash/crc32"
)

// castagnoliRev is the Castagnoli polynomial, reflected, without x^32.
const castagnoliRev = 0x82F63B78

// xPow2 holds x^(2^k) modulo the polynomial, for k = 0..31.
var xPow2 = func() (t [32]uint32) {
	t[0] = 0x40000000 // x^1
	for k := 1; k < 32; k++ {
		t[k] = mulModP(t[k-1], t[k-1])
	}
	return t
}()

// mulModP is a·b modulo the polynomial.
func mulModP(a, b uint32) uint32 {
	var m uint32
	for bit := uint32(0x80000000); bit != 0; bit >>= 1 {
		if a&bit != 0 {
			m ^= b
			if a&(bit-1) == 0 {
				break
			}
		}
		// b·x
		if b&1 != 0 {
			b = b>>1 ^ castagnoliRev
		} else {
			b >>= 1
		}
	}
	return m
}

// xPowBytes is x^(8n) modulo the polynomial: what carrying a CRC over n
// zero bytes multiplies it by.
func xPowBytes(n int) uint32 {
	p := uint32(0x80000000) // x^0
	for k := 3; n > 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = mulModP(xPow2[k&31], p)
		}
	}
	return p
}

// patchCRC gives the batch b (length bytes) the CRC-32C it has after its
// bytes from batchAttrOff on changed from old (the same bytes as they
// were, len(old) of them) to what b holds now, from the CRC it had then.
// A batch whose CRC was wrong stays wrong: nothing is blessed that was
// not checked.
func patchCRC(b []byte, length int, old []byte) {
	var d [batchCountOff - batchAttrOff]byte
	diff := d[:len(old)]
	for i := range diff {
		diff[i] = old[i] ^ b[batchAttrOff+i]
	}
	// The unconditioned CRC of diff: Go's Update conditions its input
	// and output (xor with all ones).
	raw := ^crc32.Update(^uint32(0), castagnoli, diff)
	raw = mulModP(xPowBytes(length-batchAttrOff-len(diff)), raw)
	binary.BigEndian.PutUint32(b[batchCRCOff:], binary.BigEndian.Uint32(b[batchCRCOff:])^raw)
}
