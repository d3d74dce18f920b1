package protocol

import "github.com/twmb/franz-go/pkg/kmsg"

// API keys eosproxy treats specially.
const (
	KeyProduce                int16 = 0
	KeyFetch                  int16 = 1
	KeyMetadata               int16 = 3
	KeyOffsetFetch            int16 = 9
	KeyFindCoordinator        int16 = 10
	KeyJoinGroup              int16 = 11
	KeyHeartbeat              int16 = 12
	KeyLeaveGroup             int16 = 13
	KeySyncGroup              int16 = 14
	KeySASLHandshake          int16 = 17
	KeyApiVersions            int16 = 18
	KeyInitProducerID         int16 = 22
	KeyAddPartitionsTxn       int16 = 24
	KeyAddOffsetsTxn          int16 = 25
	KeyEndTxn                 int16 = 26
	KeyTxnOffsetCommit        int16 = 28
	KeySASLAuthenticate       int16 = 36
	KeyDescribeProducers      int16 = 61
	KeyDescribeCluster        int16 = 60
	KeyDescribeTxns           int16 = 65
	KeyListTxns               int16 = 66
	KeyConsumerGroupHeartbeat int16 = 68
	KeyShareFetch             int16 = 78
	KeyShareAcknowledge       int16 = 79
)

type keyInfo struct {
	known        bool
	maxVersion   int16
	firstFlexVer int16 // -1 when no version is flexible
}

// keyTable is derived from kmsg once, so the knowledge of which versions are
// flexible has one source: the same generated code the clients use.
var keyTable = func() []keyInfo {
	var t []keyInfo
	for k := int16(0); k < 1024; k++ {
		req := kmsg.RequestForKey(k)
		if req == nil {
			t = append(t, keyInfo{})
			continue
		}
		info := keyInfo{known: true, maxVersion: req.MaxVersion(), firstFlexVer: -1}
		for v := int16(0); v <= info.maxVersion; v++ {
			req.SetVersion(v)
			if req.IsFlexible() {
				info.firstFlexVer = v
				break
			}
		}
		t = append(t, info)
	}
	for len(t) > 0 && !t[len(t)-1].known {
		t = t[:len(t)-1]
	}
	return t
}()

// RequestIsFlexible reports whether (key, version) uses KIP-482 flexible
// encoding, and whether eosproxy knows the key at all. Versions above the
// newest known one are flexible if any known version is, as flexibility is
// never withdrawn.
func RequestIsFlexible(key, version int16) (flexible, known bool) {
	if key < 0 || int(key) >= len(keyTable) || !keyTable[key].known {
		return false, false
	}
	f := keyTable[key].firstFlexVer
	return f >= 0 && version >= f, true
}

// MaxKnownVersion is the newest version of key that eosproxy can decode, or -1.
func MaxKnownVersion(key int16) int16 {
	if key < 0 || int(key) >= len(keyTable) || !keyTable[key].known {
		return -1
	}
	return keyTable[key].maxVersion
}

// IsDecoded reports whether responses to key are decoded by eosproxy; their
// advertised versions are capped to what eosproxy can decode.
func IsDecoded(key int16) bool {
	switch key {
	case KeyProduce, KeyFetch, KeyMetadata, KeyFindCoordinator, KeyApiVersions, KeyDescribeCluster,
		KeyShareFetch, KeyShareAcknowledge, KeyOffsetFetch:
		return true
	}
	return false
}

// MaxProxyVersion is the newest version of key that eosproxy advertises and
// accepts for a key it decodes or answers itself: what kmsg decodes, except
// Produce v13, which names topics by id, while eosproxy keeps producer state
// by topic name, and Fetch v16+.
//
// Fetch is capped at v15: from v16 a response may end with node endpoints
// (KIP-951), and since a frame's size goes first, every response would have
// to be held whole before a byte of it is sent, on the path that carries
// nearly all of a consumer's bytes. Below v16 Fetch responses stream through
// untouched; clients learn a new leader from Metadata instead.
func MaxProxyVersion(key int16) int16 {
	switch key {
	case KeyProduce:
		return min(12, MaxKnownVersion(key))
	case KeyFetch:
		return min(15, MaxKnownVersion(key))
	case KeyAddPartitionsTxn:
		// v4+ is the broker-to-coordinator form (a batch of transactions);
		// clients use v0–v3.
		return min(3, MaxKnownVersion(key))
	case KeyTxnOffsetCommit:
		// v6 names topics by id; held offsets are kept by topic name.
		return min(5, MaxKnownVersion(key))
	case KeyOffsetFetch:
		// v10 names topics by id; pending offsets are kept by topic name.
		return min(9, MaxKnownVersion(key))
	}
	return MaxKnownVersion(key)
}

// AnsweredLocally lists the keys eosproxy serves itself and so advertises
// even when the upstream lacks them: it is the transaction coordinator.
var AnsweredLocally = []int16{KeyInitProducerID, KeyAddPartitionsTxn, KeyAddOffsetsTxn, KeyEndTxn,
	KeyTxnOffsetCommit, KeyDescribeProducers, KeyDescribeTxns, KeyListTxns}
