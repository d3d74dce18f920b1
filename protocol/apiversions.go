package protocol

import (
	"encoding/binary"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TxnVersion is the transaction.version eosproxy finalizes: 2, KIP-890's
// protocol (implicit partition adds on Produce v12+, an epoch bump on every
// EndTxn v5+). Clients that do not know it use the classic protocol, which
// eosproxy serves too.
const TxnVersion int16 = 2

const txnVersionFeature = "transaction.version"

// Features eosproxy passes on from the upstream's finalized features. Others
// describe behaviour eosproxy would have to implement itself before clients
// may rely on it; transaction.version is eosproxy's own (TxnVersion).
var passedFeatures = map[string]bool{
	"metadata.version": true,
	"kraft.version":    true,
	"group.version":    true,
}

// RewriteApiVersions caps the upstream's ApiVersions answer to what eosproxy
// can handle and returns the new body with the decoded upstream answer (as
// the upstream sent it). An upstream that does not support the client's
// version answers in v0 form with UNSUPPORTED_VERSION (KIP-511); that answer
// is read and re-encoded as v0 too.
func RewriteApiVersions(version int16, body []byte) ([]byte, *kmsg.ApiVersionsResponse, error) {
	if len(body) >= 2 && int16(binary.BigEndian.Uint16(body)) == kerr.UnsupportedVersion.Code {
		version = 0
	}
	up := kmsg.NewPtrApiVersionsResponse()
	up.SetVersion(version)
	if err := up.ReadFrom(body); err != nil {
		return nil, nil, fmt.Errorf("decode ApiVersions v%d response: %w", version, err)
	}
	out := *up
	out.ApiKeys = make([]kmsg.ApiVersionsResponseApiKey, 0, len(up.ApiKeys))
	have := map[int16]bool{}
	for _, k := range up.ApiKeys {
		have[k.ApiKey] = true
		if IsDecoded(k.ApiKey) {
			k.MaxVersion = min(k.MaxVersion, MaxProxyVersion(k.ApiKey))
			if k.MaxVersion < k.MinVersion {
				continue
			}
		}
		for _, local := range AnsweredLocally {
			if k.ApiKey == local {
				// eosproxy answers these itself: its own range, whatever
				// the upstream's.
				k.MinVersion, k.MaxVersion = 0, MaxProxyVersion(local)
			}
		}
		out.ApiKeys = append(out.ApiKeys, k)
	}
	for _, local := range AnsweredLocally {
		// A failed answer (the KIP-511 fallback) lists only what the client
		// needs to retry; it gets nothing added.
		if !have[local] && up.ErrorCode == 0 {
			out.ApiKeys = append(out.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: local, MaxVersion: MaxProxyVersion(local)})
		}
	}
	out.FinalizedFeatures = nil
	for _, f := range up.FinalizedFeatures {
		if passedFeatures[f.Name] {
			out.FinalizedFeatures = append(out.FinalizedFeatures, f)
		}
	}
	out.SupportedFeatures = nil
	for _, f := range up.SupportedFeatures {
		if passedFeatures[f.Name] {
			out.SupportedFeatures = append(out.SupportedFeatures, f)
		}
	}
	if up.ErrorCode == 0 && version >= 3 {
		// eosproxy is the transaction coordinator: the transaction protocol
		// clients may use is its own, whatever the backend's.
		out.SupportedFeatures = append(out.SupportedFeatures, kmsg.ApiVersionsResponseSupportedFeature{
			Name: txnVersionFeature, MinVersion: 0, MaxVersion: TxnVersion,
		})
		out.FinalizedFeatures = append(out.FinalizedFeatures, kmsg.ApiVersionsResponseFinalizedFeature{
			Name: txnVersionFeature, MinVersionLevel: TxnVersion, MaxVersionLevel: TxnVersion,
		})
		// Clients keep the finalized features of the highest epoch seen and
		// ignore an epoch of -1 (a backend that has no features).
		out.FinalizedFeaturesEpoch = max(out.FinalizedFeaturesEpoch, 1)
	}
	return out.AppendTo(make([]byte, 0, len(body))), up, nil
}

// ApiVersionsFallback is Kafka's answer to an ApiVersions request of a
// version it does not know: a v0 body with UNSUPPORTED_VERSION listing only
// ApiVersions' own range, so the client can retry with a version both know.
func ApiVersionsFallback() []byte {
	r := kmsg.NewPtrApiVersionsResponse()
	r.SetVersion(0)
	r.ErrorCode = kerr.UnsupportedVersion.Code
	r.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: KeyApiVersions, MinVersion: 0, MaxVersion: MaxKnownVersion(KeyApiVersions)}}
	return r.AppendTo(nil)
}
