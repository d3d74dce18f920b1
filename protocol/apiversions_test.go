package protocol

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

type apiRange struct{ key, min, max int16 }

// upstreamKeys is what a newer broker might advertise: decoded keys above
// what kmsg knows, keys eosproxy passes through, and a key from the future.
var upstreamKeys = []apiRange{
	{KeyProduce, 0, 20},
	{KeyFetch, 4, 30},
	{2, 1, 40}, // ListOffsets: passed through, not capped
	{KeyMetadata, 0, 99},
	{KeyFindCoordinator, 0, 6},
	{KeyApiVersions, 0, 9},
	{22, 0, 9}, // InitProducerId: not decoded here
	{KeyDescribeCluster, 0, 1},
	{KeyShareFetch, 7, 9}, // minimum above what eosproxy decodes: dropped
	{KeyShareAcknowledge, 1, 4},
	{KeyOffsetFetch, 0, 10},     // decoded: capped at v9 (v10 names topics by id)
	{KeyAddPartitionsTxn, 0, 5}, // answered by eosproxy: v4+ is broker-to-coordinator, not offered
	{KeyEndTxn, 3, 9},           // answered by eosproxy: its own 0..max, whatever the upstream's
	{9999, 0, 3},
}

func apiVersionsUpstream(v int16) *kmsg.ApiVersionsResponse {
	r := kmsg.NewPtrApiVersionsResponse()
	r.SetVersion(v)
	for _, k := range upstreamKeys {
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k.key, k.min, k.max
		r.ApiKeys = append(r.ApiKeys, ak)
	}
	r.ThrottleMillis = 9
	for _, f := range []struct {
		name     string
		min, max int16
	}{{"metadata.version", 1, 27}, {"transaction.version", 0, 2}, {"group.version", 0, 1}, {"kraft.version", 0, 1}, {"share.version", 0, 1}} {
		sf := kmsg.NewApiVersionsResponseSupportedFeature()
		sf.Name, sf.MinVersion, sf.MaxVersion = f.name, f.min, f.max
		r.SupportedFeatures = append(r.SupportedFeatures, sf)
	}
	r.FinalizedFeaturesEpoch = 42
	for _, f := range []struct {
		name string
		lvl  int16
	}{{"transaction.version", 2}, {"metadata.version", 27}, {"eligible.leader.replicas.version", 1}, {"group.version", 1}} {
		ff := kmsg.NewApiVersionsResponseFinalizedFeature()
		ff.Name, ff.MinVersionLevel, ff.MaxVersionLevel = f.name, f.lvl, f.lvl
		r.FinalizedFeatures = append(r.FinalizedFeatures, ff)
	}
	r.ZkMigrationReady = true
	return r
}

func isAnsweredLocally(key int16) bool {
	for _, k := range AnsweredLocally {
		if k == key {
			return true
		}
	}
	return false
}

// expectedKeys is what eosproxy advertises for an upstream advertising ups:
// decoded keys capped to what eosproxy handles, keys it answers itself at
// its own range, 0..max (added when the upstream lacks them), the rest unchanged.
func expectedKeys(ups []apiRange) []apiRange {
	var out []apiRange
	have := map[int16]bool{}
	for _, k := range ups {
		have[k.key] = true
		if IsDecoded(k.key) {
			k.max = min(k.max, MaxProxyVersion(k.key))
			if k.max < k.min {
				continue
			}
		}
		if isAnsweredLocally(k.key) {
			k.min, k.max = 0, MaxProxyVersion(k.key)
		}
		out = append(out, k)
	}
	for _, k := range AnsweredLocally {
		if !have[k] {
			out = append(out, apiRange{k, 0, MaxProxyVersion(k)})
		}
	}
	return out
}

func keysOf(r *kmsg.ApiVersionsResponse) []apiRange {
	var out []apiRange
	for _, k := range r.ApiKeys {
		out = append(out, apiRange{k.ApiKey, k.MinVersion, k.MaxVersion})
	}
	return out
}

func TestRewriteApiVersionsEveryVersion(t *testing.T) {
	// Hand-written expectations, so a wrong kmsg max cannot hide here.
	hand := map[int16]apiRange{
		KeyProduce:         {KeyProduce, 0, 12}, // v13 names topics by id: not offered
		KeyFetch:           {KeyFetch, 4, 15},   // capped: v16+ responses cannot stream
		KeyMetadata:        {KeyMetadata, 0, 13},
		KeyApiVersions:     {KeyApiVersions, 0, 5},
		2:                  {2, 1, 40},
		22:                 {22, 0, 5},             // InitProducerId: answered by eosproxy
		24:                 {24, 0, 3},             // AddPartitionsToTxn: answered by eosproxy, v4+ not offered
		25:                 {25, 0, 4},             // AddOffsetsToTxn: answered by eosproxy, added
		26:                 {26, 0, 5},             // EndTxn: answered by eosproxy, min lowered to 0
		28:                 {28, 0, 5},             // TxnOffsetCommit: answered by eosproxy, added, v6 not offered
		61:                 {61, 0, 0},             // DescribeProducers: answered by eosproxy, added
		65:                 {65, 0, 0},             // DescribeTransactions: answered by eosproxy, added
		66:                 {66, 0, 2},             // ListTransactions: answered by eosproxy, added
		KeyOffsetFetch:     {KeyOffsetFetch, 0, 9}, // v10 names topics by id: not offered
		9999:               {9999, 0, 3},
		KeyDescribeCluster: {KeyDescribeCluster, 0, 1},
	}
	for _, k := range AnsweredLocally {
		if _, ok := hand[k]; !ok {
			t.Fatalf("key %d, answered by eosproxy, has no hand-written expectation", k)
		}
	}
	for v := int16(0); v <= kmsg.NewPtrApiVersionsResponse().MaxVersion(); v++ {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			upResp := apiVersionsUpstream(v)
			body := upResp.AppendTo(nil)
			orig := bytes.Clone(body)
			out, up, err := RewriteApiVersions(v, body)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(body, orig) {
				t.Fatal("input modified")
			}

			// The second result is the upstream's answer as sent.
			if up == nil {
				t.Fatal("nil upstream answer")
			}
			if got := up.AppendTo(nil); !bytes.Equal(got, orig) {
				t.Fatalf("upstream answer altered:\n got %x\nwant %x", got, orig)
			}
			if up.Version != v {
				t.Fatalf("upstream answer version %d, want %d", up.Version, v)
			}
			if fmt.Sprint(keysOf(up)) != fmt.Sprint(keysOf(upResp)) {
				t.Fatalf("upstream keys = %v, want %v", keysOf(up), keysOf(upResp))
			}

			dec := kmsg.NewPtrApiVersionsResponse()
			dec.SetVersion(v)
			if err := dec.ReadFrom(out); err != nil {
				t.Fatalf("result does not decode as v%d: %v", v, err)
			}
			got := keysOf(dec)
			if want := expectedKeys(upstreamKeys); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("keys = %v\nwant %v", got, want)
			}
			seen := map[int16]bool{}
			for _, k := range got {
				seen[k.key] = true
				if IsDecoded(k.key) && k.max > MaxProxyVersion(k.key) {
					t.Errorf("key %d advertised up to v%d, eosproxy handles up to v%d", k.key, k.max, MaxProxyVersion(k.key))
				}
				if h, ok := hand[k.key]; ok && h != k {
					t.Errorf("key %d = %v, want %v", k.key, k, h)
				}
			}
			if seen[KeyShareFetch] {
				t.Error("ShareFetch with min version above eosproxy's max was kept")
			}
			if !seen[9999] || !seen[2] {
				t.Errorf("pass-through keys lost: %v", got)
			}
			for _, k := range AnsweredLocally {
				if !seen[k] {
					t.Errorf("key %d, answered by eosproxy, not advertised: %v", k, got)
				}
			}
			if dec.ErrorCode != 0 {
				t.Errorf("error code %d", dec.ErrorCode)
			}
			if v >= 1 && dec.ThrottleMillis != 9 {
				t.Errorf("throttle %d, want 9", dec.ThrottleMillis)
			}

			var fin, sup []string
			for _, f := range dec.FinalizedFeatures {
				fin = append(fin, fmt.Sprintf("%s=%d..%d", f.Name, f.MinVersionLevel, f.MaxVersionLevel))
			}
			for _, f := range dec.SupportedFeatures {
				sup = append(sup, fmt.Sprintf("%s=%d..%d", f.Name, f.MinVersion, f.MaxVersion))
			}
			if v >= 3 {
				// The passed features in the upstream's order, then
				// eosproxy's own transaction.version, replacing the
				// upstream's.
				if want := "[metadata.version=27..27 group.version=1..1 transaction.version=2..2]"; fmt.Sprint(fin) != want {
					t.Errorf("finalized features = %v, want %s", fin, want)
				}
				if want := "[metadata.version=1..27 group.version=0..1 kraft.version=0..1 transaction.version=0..2]"; fmt.Sprint(sup) != want {
					t.Errorf("supported features = %v, want %s", sup, want)
				}
				if dec.FinalizedFeaturesEpoch != 42 || !dec.ZkMigrationReady {
					t.Errorf("epoch %d, zk migration %v", dec.FinalizedFeaturesEpoch, dec.ZkMigrationReady)
				}
				// The upstream answer still has them all.
				if len(up.FinalizedFeatures) != 4 || len(up.SupportedFeatures) != 5 {
					t.Errorf("upstream answer lost features: %d finalized, %d supported", len(up.FinalizedFeatures), len(up.SupportedFeatures))
				}
			} else if len(fin) != 0 || len(sup) != 0 {
				t.Errorf("features in a v%d answer", v)
			}

			// Byte for byte what kmsg makes of the expected answer.
			want := apiVersionsUpstream(v)
			want.ApiKeys = want.ApiKeys[:0]
			for _, k := range expectedKeys(upstreamKeys) {
				ak := kmsg.NewApiVersionsResponseApiKey()
				ak.ApiKey, ak.MinVersion, ak.MaxVersion = k.key, k.min, k.max
				want.ApiKeys = append(want.ApiKeys, ak)
			}
			want.FinalizedFeatures = []kmsg.ApiVersionsResponseFinalizedFeature{upResp.FinalizedFeatures[1], upResp.FinalizedFeatures[3],
				{Name: "transaction.version", MinVersionLevel: 2, MaxVersionLevel: 2}}
			want.SupportedFeatures = []kmsg.ApiVersionsResponseSupportedFeature{upResp.SupportedFeatures[0], upResp.SupportedFeatures[2], upResp.SupportedFeatures[3],
				{Name: "transaction.version", MinVersion: 0, MaxVersion: 2}}
			if w := want.AppendTo(nil); !bytes.Equal(out, w) {
				t.Fatalf("result\n got %x\nwant %x", out, w)
			}
		})
	}
}

func TestRewriteApiVersionsNoFeatures(t *testing.T) {
	// Only transaction.version finalized upstream, with the default epoch
	// -1: the result has eosproxy's transaction.version alone, at an epoch
	// clients accept.
	r := kmsg.NewPtrApiVersionsResponse()
	r.SetVersion(3)
	r.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: KeyApiVersions, MinVersion: 0, MaxVersion: 3}}
	r.FinalizedFeatures = []kmsg.ApiVersionsResponseFinalizedFeature{{Name: "transaction.version", MinVersionLevel: 1, MaxVersionLevel: 1}}
	out, _, err := RewriteApiVersions(3, r.AppendTo(nil))
	if err != nil {
		t.Fatal(err)
	}
	dec := kmsg.NewPtrApiVersionsResponse()
	dec.SetVersion(3)
	if err := dec.ReadFrom(out); err != nil {
		t.Fatal(err)
	}
	if len(dec.ApiKeys) != 1+len(AnsweredLocally) || dec.ApiKeys[0].ApiKey != KeyApiVersions {
		t.Fatalf("got %+v", dec)
	}
	if fin := finalizedOf(dec); fin != "[transaction.version=2..2]" {
		t.Errorf("finalized features = %s, want eosproxy's transaction.version=2..2 alone", fin)
	}
	if sup := supportedOf(dec); sup != "[transaction.version=0..2]" {
		t.Errorf("supported features = %s, want eosproxy's transaction.version=0..2 alone", sup)
	}
	if dec.FinalizedFeaturesEpoch != 1 {
		t.Errorf("finalized features epoch %d, want 1", dec.FinalizedFeaturesEpoch)
	}
}

func finalizedOf(r *kmsg.ApiVersionsResponse) string {
	var out []string
	for _, f := range r.FinalizedFeatures {
		out = append(out, fmt.Sprintf("%s=%d..%d", f.Name, f.MinVersionLevel, f.MaxVersionLevel))
	}
	return fmt.Sprint(out)
}

func supportedOf(r *kmsg.ApiVersionsResponse) string {
	var out []string
	for _, f := range r.SupportedFeatures {
		out = append(out, fmt.Sprintf("%s=%d..%d", f.Name, f.MinVersion, f.MaxVersion))
	}
	return fmt.Sprint(out)
}

type feature struct {
	name     string
	min, max int16
}

// featuresUpstream is an upstream ApiVersions answer with the given
// features and a minimal key list.
func featuresUpstream(v, errCode int16, epoch int64, sup, fin []feature) *kmsg.ApiVersionsResponse {
	r := kmsg.NewPtrApiVersionsResponse()
	r.SetVersion(v)
	r.ErrorCode = errCode
	r.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: KeyApiVersions, MinVersion: 0, MaxVersion: 4}, {ApiKey: KeyProduce, MinVersion: 0, MaxVersion: 11}}
	for _, f := range sup {
		r.SupportedFeatures = append(r.SupportedFeatures, kmsg.ApiVersionsResponseSupportedFeature{Name: f.name, MinVersion: f.min, MaxVersion: f.max})
	}
	r.FinalizedFeaturesEpoch = epoch
	for _, f := range fin {
		r.FinalizedFeatures = append(r.FinalizedFeatures, kmsg.ApiVersionsResponseFinalizedFeature{Name: f.name, MinVersionLevel: f.min, MaxVersionLevel: f.max})
	}
	return r
}

// txnVersionCases are upstreams with every kind of transaction.version
// (and of features epoch): eosproxy, the coordinator, advertises its own
// whatever they say.
var txnVersionCases = []struct {
	name     string
	errCode  int16
	epoch    int64
	sup, fin []feature
	// wantSup and wantFin are the result's features, wantEpoch its epoch.
	wantSup, wantFin string
	wantEpoch        int64
}{
	{
		name: "no features, epoch -1 (ZooKeeper-era broker)", epoch: -1,
		wantSup: "[transaction.version=0..2]", wantFin: "[transaction.version=2..2]", wantEpoch: 1,
	},
	{
		name: "no features, epoch 0", epoch: 0,
		wantSup: "[transaction.version=0..2]", wantFin: "[transaction.version=2..2]", wantEpoch: 1,
	},
	{
		name: "metadata only, no transaction.version", epoch: 1,
		sup:     []feature{{"metadata.version", 1, 21}},
		fin:     []feature{{"metadata.version", 21, 21}},
		wantSup: "[metadata.version=1..21 transaction.version=0..2]", wantFin: "[metadata.version=21..21 transaction.version=2..2]", wantEpoch: 1,
	},
	{
		name: "transaction.version 0 finalized", epoch: 7,
		sup:     []feature{{"metadata.version", 1, 25}, {"transaction.version", 0, 0}, {"kraft.version", 0, 1}},
		fin:     []feature{{"metadata.version", 25, 25}, {"transaction.version", 0, 0}},
		wantSup: "[metadata.version=1..25 kraft.version=0..1 transaction.version=0..2]", wantFin: "[metadata.version=25..25 transaction.version=2..2]", wantEpoch: 7,
	},
	{
		name: "transaction.version 1 finalized, listed first", epoch: 3,
		sup:     []feature{{"transaction.version", 0, 1}, {"group.version", 0, 1}},
		fin:     []feature{{"transaction.version", 1, 1}, {"group.version", 1, 1}},
		wantSup: "[group.version=0..1 transaction.version=0..2]", wantFin: "[group.version=1..1 transaction.version=2..2]", wantEpoch: 3,
	},
	{
		name: "transaction.version 2 finalized, as eosproxy's", epoch: 42,
		sup:     []feature{{"transaction.version", 0, 2}},
		fin:     []feature{{"transaction.version", 2, 2}},
		wantSup: "[transaction.version=0..2]", wantFin: "[transaction.version=2..2]", wantEpoch: 42,
	},
	{
		name: "transaction.version 3, a future broker", epoch: 1 << 40,
		sup:     []feature{{"transaction.version", 0, 3}, {"share.version", 0, 1}},
		fin:     []feature{{"share.version", 1, 1}, {"transaction.version", 3, 3}},
		wantSup: "[transaction.version=0..2]", wantFin: "[transaction.version=2..2]", wantEpoch: 1 << 40,
	},
	{
		name: "transaction.version supported but not finalized", epoch: 5,
		sup:     []feature{{"transaction.version", 0, 2}, {"metadata.version", 1, 27}},
		wantSup: "[metadata.version=1..27 transaction.version=0..2]", wantFin: "[transaction.version=2..2]", wantEpoch: 5,
	},
	{
		name: "transaction.version listed twice", epoch: 2,
		sup:     []feature{{"transaction.version", 0, 1}, {"transaction.version", 0, 2}},
		fin:     []feature{{"transaction.version", 1, 1}, {"transaction.version", 0, 0}},
		wantSup: "[transaction.version=0..2]", wantFin: "[transaction.version=2..2]", wantEpoch: 2,
	},
	{
		// A failed answer gets nothing added, features included; the
		// upstream's transaction.version is dropped all the same.
		name: "failed answer", errCode: 31, epoch: 9,
		sup:     []feature{{"metadata.version", 1, 27}, {"transaction.version", 0, 2}},
		fin:     []feature{{"transaction.version", 2, 2}, {"metadata.version", 27, 27}},
		wantSup: "[metadata.version=1..27]", wantFin: "[metadata.version=27..27]", wantEpoch: 9,
	},
}

func TestRewriteApiVersionsTxnVersionIsEosproxys(t *testing.T) {
	if TxnVersion != 2 {
		t.Fatalf("TxnVersion = %d; the expectations below are for 2", TxnVersion)
	}
	for _, tc := range txnVersionCases {
		for v := int16(0); v <= MaxKnownVersion(KeyApiVersions); v++ {
			t.Run(fmt.Sprintf("%s/v%d", tc.name, v), func(t *testing.T) {
				upResp := featuresUpstream(v, tc.errCode, tc.epoch, tc.sup, tc.fin)
				body := upResp.AppendTo(nil)
				out, up, err := RewriteApiVersions(v, body)
				if err != nil {
					t.Fatal(err)
				}
				checkRewriteApiVersions(t, v, body)
				dec := kmsg.NewPtrApiVersionsResponse()
				dec.SetVersion(v)
				if err := dec.ReadFrom(out); err != nil {
					t.Fatal(err)
				}
				if v < 3 {
					// No features in the encoding, and nothing else changes
					// with them.
					if len(dec.FinalizedFeatures) != 0 || len(dec.SupportedFeatures) != 0 {
						t.Fatalf("features in a v%d answer: %+v", v, dec)
					}
					return
				}
				if got := supportedOf(dec); got != tc.wantSup {
					t.Errorf("supported features = %s, want %s", got, tc.wantSup)
				}
				if got := finalizedOf(dec); got != tc.wantFin {
					t.Errorf("finalized features = %s, want %s", got, tc.wantFin)
				}
				if dec.FinalizedFeaturesEpoch != tc.wantEpoch {
					t.Errorf("finalized features epoch %d, want %d", dec.FinalizedFeaturesEpoch, tc.wantEpoch)
				}
				// The upstream's answer, returned for eosproxy's own use,
				// keeps the upstream's features as sent.
				if supportedOf(up) != supportedOf(upResp) || finalizedOf(up) != finalizedOf(upResp) || up.FinalizedFeaturesEpoch != tc.epoch {
					t.Errorf("upstream answer altered: %s %s epoch %d", supportedOf(up), finalizedOf(up), up.FinalizedFeaturesEpoch)
				}
			})
		}
	}
}

// An upstream without idempotence or transactions (no InitProducerId,
// no DescribeProducers, no transaction keys) still gets them advertised:
// eosproxy answers them.
func TestRewriteApiVersionsAddsLocallyAnsweredKeys(t *testing.T) {
	ups := []apiRange{{KeyProduce, 0, 9}, {KeyMetadata, 0, 12}, {KeyApiVersions, 0, 4}}
	for v := int16(0); v <= MaxKnownVersion(KeyApiVersions); v++ {
		r := kmsg.NewPtrApiVersionsResponse()
		r.SetVersion(v)
		for _, k := range ups {
			r.ApiKeys = append(r.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: k.key, MinVersion: k.min, MaxVersion: k.max})
		}
		out, _, err := RewriteApiVersions(v, r.AppendTo(nil))
		if err != nil {
			t.Fatal(err)
		}
		dec := kmsg.NewPtrApiVersionsResponse()
		dec.SetVersion(v)
		if err := dec.ReadFrom(out); err != nil {
			t.Fatal(err)
		}
		want := append([]apiRange(nil), ups...)
		for _, k := range []int16{22, 24, 25, 26, 28, 61, 65, 66} {
			want = append(want, apiRange{k, 0, MaxProxyVersion(k)})
		}
		if got := keysOf(dec); fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(want) != fmt.Sprint(expectedKeys(ups)) {
			t.Fatalf("v%d: keys = %v, want %v", v, got, want)
		}
		if v >= 3 && (finalizedOf(dec) != "[transaction.version=2..2]" || supportedOf(dec) != "[transaction.version=0..2]") {
			t.Fatalf("v%d: features %s %s, want eosproxy's transaction.version alone", v, finalizedOf(dec), supportedOf(dec))
		}
	}
}

// Every advertised range must be a valid one (min <= max), whatever the
// upstream advertises for a key eosproxy answers itself.
func TestRewriteApiVersionsLocalKeyRangeValid(t *testing.T) {
	r := kmsg.NewPtrApiVersionsResponse()
	r.SetVersion(3)
	r.ApiKeys = []kmsg.ApiVersionsResponseApiKey{
		{ApiKey: KeyApiVersions, MinVersion: 0, MaxVersion: 4},
		{ApiKey: KeyInitProducerID, MinVersion: 7, MaxVersion: 9}, // a future broker that dropped old versions
	}
	out, _, err := RewriteApiVersions(3, r.AppendTo(nil))
	if err != nil {
		t.Fatal(err)
	}
	dec := kmsg.NewPtrApiVersionsResponse()
	dec.SetVersion(3)
	if err := dec.ReadFrom(out); err != nil {
		t.Fatal(err)
	}
	for _, k := range dec.ApiKeys {
		if k.MinVersion > k.MaxVersion {
			t.Errorf("key %d advertised as %d..%d", k.ApiKey, k.MinVersion, k.MaxVersion)
		}
		if k.ApiKey == KeyInitProducerID && (k.MinVersion != 0 || k.MaxVersion != MaxProxyVersion(KeyInitProducerID)) {
			t.Errorf("InitProducerId advertised as %d..%d, want eosproxy's own 0..%d", k.MinVersion, k.MaxVersion, MaxProxyVersion(KeyInitProducerID))
		}
	}
}

func TestRewriteApiVersionsUnsupportedVersionFallback(t *testing.T) {
	// A broker that does not know the client's ApiVersions version answers
	// in v0 form with UNSUPPORTED_VERSION, whatever version was asked.
	for _, upMax := range []int16{3, 4, 9} {
		v0 := kmsg.NewPtrApiVersionsResponse()
		v0.SetVersion(0)
		v0.ErrorCode = 35
		v0.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: KeyApiVersions, MinVersion: 0, MaxVersion: upMax}}
		body := v0.AppendTo(nil)
		for asked := int16(0); asked <= kmsg.NewPtrApiVersionsResponse().MaxVersion()+2; asked++ {
			t.Run(fmt.Sprintf("upstream max %d/asked v%d", upMax, asked), func(t *testing.T) {
				out, up, err := RewriteApiVersions(asked, body)
				if err != nil {
					t.Fatalf("v0 fallback read as v%d: %v", asked, err)
				}
				if up.Version != 0 || up.ErrorCode != 35 || len(up.ApiKeys) != 1 || up.ApiKeys[0].MaxVersion != upMax {
					t.Fatalf("upstream answer = %+v", up)
				}
				dec := kmsg.NewPtrApiVersionsResponse()
				dec.SetVersion(0)
				if err := dec.ReadFrom(out); err != nil {
					t.Fatalf("result is not v0: %v", err)
				}
				wantMax := min(upMax, MaxKnownVersion(KeyApiVersions))
				if dec.ErrorCode != 35 || len(dec.ApiKeys) != 1 || dec.ApiKeys[0].ApiKey != KeyApiVersions ||
					dec.ApiKeys[0].MinVersion != 0 || dec.ApiKeys[0].MaxVersion != wantMax {
					t.Fatalf("result = %+v", dec)
				}
				// v0 form exactly: error code, array of 6-byte entries.
				if len(out) != 2+4+6 {
					t.Fatalf("result of %d bytes is not a v0 body: %x", len(out), out)
				}
			})
		}
	}
}

func TestApiVersionsFallback(t *testing.T) {
	b := ApiVersionsFallback()
	want := []byte{0, 35, 0, 0, 0, 1, 0, 18, 0, 0, 0, byte(MaxKnownVersion(KeyApiVersions))}
	if !bytes.Equal(b, want) {
		t.Fatalf("fallback = %x, want %x", b, want)
	}
	r := kmsg.NewPtrApiVersionsResponse()
	r.SetVersion(0)
	if err := r.ReadFrom(b); err != nil {
		t.Fatal(err)
	}
	if r.ErrorCode != 35 || len(r.ApiKeys) != 1 || r.ApiKeys[0].ApiKey != 18 || r.ApiKeys[0].MinVersion != 0 ||
		r.ApiKeys[0].MaxVersion != kmsg.NewPtrApiVersionsRequest().MaxVersion() {
		t.Fatalf("fallback = %+v", r)
	}
	// The fallback passes through RewriteApiVersions unchanged.
	out, _, err := RewriteApiVersions(4, b)
	if err != nil || !bytes.Equal(out, b) {
		t.Fatalf("rewrite of the fallback = %x, %v", out, err)
	}
	// Each call returns a fresh slice.
	b[0] = 0xff
	if ApiVersionsFallback()[0] != 0 {
		t.Fatal("ApiVersionsFallback shares its buffer")
	}
}

func TestRewriteApiVersionsTruncatedAndGarbage(t *testing.T) {
	for v := int16(0); v <= kmsg.NewPtrApiVersionsResponse().MaxVersion(); v++ {
		body := apiVersionsUpstream(v).AppendTo(nil)
		for n := 0; n < len(body); n++ {
			out, up, err := RewriteApiVersions(v, body[:n:n])
			if err == nil || out != nil || up != nil {
				t.Fatalf("v%d: %d of %d bytes: out %x, up %v, err %v", v, n, len(body), out, up, err)
			}
		}
	}
	rng := rand.New(rand.NewPCG(9, 10))
	seeds := [][]byte{ApiVersionsFallback()}
	for v := int16(0); v <= 5; v++ {
		seeds = append(seeds, apiVersionsUpstream(v).AppendTo(nil))
	}
	for i := 0; i < 20000; i++ {
		body := bytes.Clone(seeds[rng.IntN(len(seeds))])
		for range 1 + rng.IntN(4) {
			body[rng.IntN(len(body))] = byte(rng.Uint32())
		}
		checkRewriteApiVersions(t, int16(rng.IntN(6)), body)
	}
}

// checkRewriteApiVersions checks what holds for any input.
func checkRewriteApiVersions(t *testing.T, v int16, body []byte) {
	t.Helper()
	orig := bytes.Clone(body)
	out, up, err := RewriteApiVersions(v, body)
	if !bytes.Equal(body, orig) {
		t.Fatalf("v%d: input modified", v)
	}
	if err != nil {
		if out != nil || up != nil {
			t.Fatalf("v%d: result with error", v)
		}
		return
	}
	dv := v
	if len(body) >= 2 && body[0] == 0 && body[1] == 35 {
		dv = 0
	}
	dec := kmsg.NewPtrApiVersionsResponse()
	dec.SetVersion(dv)
	if err := dec.ReadFrom(out); err != nil {
		t.Fatalf("v%d: result does not decode as v%d: %v\ninput %x", v, dv, err, body)
	}
	if dec.ErrorCode != up.ErrorCode {
		t.Fatalf("v%d: error code %d, upstream %d", v, dec.ErrorCode, up.ErrorCode)
	}
	extra := len(AnsweredLocally)
	if up.ErrorCode != 0 {
		extra = 0 // a failed answer gets nothing added
	}
	if len(dec.ApiKeys) > len(up.ApiKeys)+extra {
		t.Fatalf("v%d: %d keys out for %d in", v, len(dec.ApiKeys), len(up.ApiKeys))
	}
	seen := map[int16]bool{}
	for _, k := range dec.ApiKeys {
		seen[k.ApiKey] = true
		if IsDecoded(k.ApiKey) && (k.MaxVersion > MaxProxyVersion(k.ApiKey) || k.MaxVersion < k.MinVersion) {
			t.Fatalf("v%d: key %d advertised %d..%d\ninput %x", v, k.ApiKey, k.MinVersion, k.MaxVersion, body)
		}
		if isAnsweredLocally(k.ApiKey) && k.MaxVersion != MaxProxyVersion(k.ApiKey) {
			t.Fatalf("v%d: key %d, answered by eosproxy, advertised up to %d\ninput %x", v, k.ApiKey, k.MaxVersion, body)
		}
	}
	if up.ErrorCode == 0 {
		for _, k := range AnsweredLocally {
			if !seen[k] {
				t.Fatalf("v%d: key %d, answered by eosproxy, missing\ninput %x", v, k, body)
			}
		}
	}
	checkFeatures(t, v, dv, body, up, dec)
}

// checkFeatures checks the features of a rewritten ApiVersions answer dec
// (read as version dv) against the upstream's answer up: the passed ones
// exactly as the upstream sent them, in its order, no other feature of the
// upstream's, and for a successful v3+ answer eosproxy's own
// transaction.version last, once: finalized at TxnVersion, supported from 0,
// at a features epoch of at least 1.
func checkFeatures(t *testing.T, v, dv int16, body []byte, up, dec *kmsg.ApiVersionsResponse) {
	t.Helper()
	own := up.ErrorCode == 0 && dv >= 3
	var wantFin []kmsg.ApiVersionsResponseFinalizedFeature
	for _, f := range up.FinalizedFeatures {
		if passedFeatures[f.Name] {
			wantFin = append(wantFin, f)
		}
	}
	var wantSup []kmsg.ApiVersionsResponseSupportedFeature
	for _, f := range up.SupportedFeatures {
		if passedFeatures[f.Name] {
			wantSup = append(wantSup, f)
		}
	}
	if own {
		wantFin = append(wantFin, kmsg.ApiVersionsResponseFinalizedFeature{Name: "transaction.version", MinVersionLevel: 2, MaxVersionLevel: 2})
		wantSup = append(wantSup, kmsg.ApiVersionsResponseSupportedFeature{Name: "transaction.version", MinVersion: 0, MaxVersion: 2})
	}
	if dv < 3 {
		// Features are not in the encoding below v3.
		wantFin, wantSup = nil, nil
	}
	txnFin, txnSup := 0, 0
	for i, f := range dec.FinalizedFeatures {
		switch {
		case f.Name == "transaction.version":
			txnFin++
			if !own || f.MinVersionLevel != TxnVersion || f.MaxVersionLevel != TxnVersion {
				t.Fatalf("v%d: finalized transaction.version %d..%d in an answer with error %d\ninput %x", v, f.MinVersionLevel, f.MaxVersionLevel, up.ErrorCode, body)
			}
		case !passedFeatures[f.Name]:
			t.Fatalf("v%d: finalized feature %q passed\ninput %x", v, f.Name, body)
		}
		if i >= len(wantFin) || f.Name != wantFin[i].Name || f.MinVersionLevel != wantFin[i].MinVersionLevel || f.MaxVersionLevel != wantFin[i].MaxVersionLevel {
			t.Fatalf("v%d: finalized features = %s, want %s\ninput %x", v, finalizedOf(dec), finalizedOf(&kmsg.ApiVersionsResponse{FinalizedFeatures: wantFin}), body)
		}
	}
	for i, f := range dec.SupportedFeatures {
		switch {
		case f.Name == "transaction.version":
			txnSup++
			if !own || f.MinVersion != 0 || f.MaxVersion != TxnVersion {
				t.Fatalf("v%d: supported transaction.version %d..%d in an answer with error %d\ninput %x", v, f.MinVersion, f.MaxVersion, up.ErrorCode, body)
			}
		case !passedFeatures[f.Name]:
			t.Fatalf("v%d: supported feature %q passed\ninput %x", v, f.Name, body)
		}
		if i >= len(wantSup) || f.Name != wantSup[i].Name || f.MinVersion != wantSup[i].MinVersion || f.MaxVersion != wantSup[i].MaxVersion {
			t.Fatalf("v%d: supported features = %s, want %s\ninput %x", v, supportedOf(dec), supportedOf(&kmsg.ApiVersionsResponse{SupportedFeatures: wantSup}), body)
		}
	}
	if len(dec.FinalizedFeatures) != len(wantFin) || len(dec.SupportedFeatures) != len(wantSup) {
		t.Fatalf("v%d: features %s %s, want %s %s\ninput %x", v, finalizedOf(dec), supportedOf(dec),
			finalizedOf(&kmsg.ApiVersionsResponse{FinalizedFeatures: wantFin}), supportedOf(&kmsg.ApiVersionsResponse{SupportedFeatures: wantSup}), body)
	}
	if own && (txnFin != 1 || txnSup != 1) {
		t.Fatalf("v%d: %d finalized and %d supported transaction.version, want 1 and 1\ninput %x", v, txnFin, txnSup, body)
	}
	if dv >= 3 {
		wantEpoch := up.FinalizedFeaturesEpoch
		if own {
			wantEpoch = max(wantEpoch, 1)
		}
		if dec.FinalizedFeaturesEpoch != wantEpoch {
			t.Fatalf("v%d: finalized features epoch %d, upstream %d, want %d\ninput %x", v, dec.FinalizedFeaturesEpoch, up.FinalizedFeaturesEpoch, wantEpoch, body)
		}
	}
}
