package protocol

import (
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Mapper returns the client-facing address of an upstream broker. It may
// start a listener for a broker it has not seen before, so it can fail.
type Mapper func(nodeID int32, host string, port int32) (string, int32, error)

// Broker is a broker to name in a Metadata or DescribeCluster answer
// besides the backend's (eosproxy's other instances in cluster mode).
type Broker struct {
	NodeID int32
	Host   string
	Port   int32
}

// RewriteAddresses returns the response body with every upstream broker
// address replaced by its client-facing one, and the extra brokers added to
// a Metadata or DescribeCluster answer, or nil when the body names no
// broker and can be sent unchanged (the common case for Produce and Fetch,
// which carry node endpoints only after a leader change, KIP-951).
func RewriteAddresses(key, version int16, body []byte, m Mapper, extra ...Broker) ([]byte, error) {
	resp := kmsg.ResponseForKey(key)
	if resp == nil {
		return nil, fmt.Errorf("no response type for key %d", key)
	}
	resp.SetVersion(version)
	if err := resp.(kmsg.UnsafeReadFrom).UnsafeReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode %s v%d response: %w", kmsg.NameForKey(key), version, err)
	}
	changed, err := MapBrokers(resp, m)
	if err != nil {
		return nil, err
	}
	if AddBrokers(resp, extra) {
		changed = true
	}
	if !changed {
		return nil, nil
	}
	return resp.AppendTo(make([]byte, 0, len(body)+64)), nil
}

// AddBrokers adds to a Metadata or DescribeCluster (brokers) answer each
// extra broker whose node id it does not name yet, and reports whether it
// added any.
func AddBrokers(resp kmsg.Response, extra []Broker) bool {
	added := false
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		if r.ErrorCode == 0 {
			r.Brokers, added = addMissing(r.Brokers, extra,
				func(x kmsg.MetadataResponseBroker) int32 { return x.NodeID },
				func(b Broker) kmsg.MetadataResponseBroker {
					nb := kmsg.NewMetadataResponseBroker()
					nb.NodeID, nb.Host, nb.Port = b.NodeID, b.Host, b.Port
					return nb
				})
		}
	case *kmsg.DescribeClusterResponse:
		// Not to controllers (endpoint type 2), nor to a failed answer.
		if r.EndpointType != 2 && r.ErrorCode == 0 {
			r.Brokers, added = addMissing(r.Brokers, extra,
				func(x kmsg.DescribeClusterResponseBroker) int32 { return x.NodeID },
				func(b Broker) kmsg.DescribeClusterResponseBroker {
					nb := kmsg.NewDescribeClusterResponseBroker()
					nb.NodeID, nb.Host, nb.Port = b.NodeID, b.Host, b.Port
					return nb
				})
		}
	}
	return added
}

// addMissing appends to list, made by mk, each extra broker whose node id
// (id) it does not hold yet.
func addMissing[T any](list []T, extra []Broker, id func(T) int32, mk func(Broker) T) ([]T, bool) {
	added := false
	for _, b := range extra {
		if !slices.ContainsFunc(list, func(x T) bool { return id(x) == b.NodeID }) {
			list = append(list, mk(b))
			added = true
		}
	}
	return list, added
}

// MapBrokers rewrites each broker address in a decoded response and reports
// whether it found any.
func MapBrokers(resp kmsg.Response, m Mapper) (bool, error) {
	n := 0
	apply := func(id int32, host *string, port *int32) error {
		n++
		h, p, err := m(id, *host, *port)
		if err != nil {
			return fmt.Errorf("map broker %d at %s:%d: %w", id, *host, *port, err)
		}
		*host, *port = h, p
		return nil
	}
	var err error
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			err = firstErr(err, apply(b.NodeID, &b.Host, &b.Port))
		}
	case *kmsg.FindCoordinatorResponse:
		if r.Version < 4 {
			// A failed lookup carries node -1 and an empty host: nothing to map.
			if r.ErrorCode == 0 && r.NodeID >= 0 {
				err = apply(r.NodeID, &r.Host, &r.Port)
			}
			break
		}
		for i := range r.Coordinators {
			c := &r.Coordinators[i]
			if c.ErrorCode == 0 && c.NodeID >= 0 {
				err = firstErr(err, apply(c.NodeID, &c.Host, &c.Port))
			}
		}
	case *kmsg.DescribeClusterResponse:
		if r.EndpointType == 2 {
			// Controllers (KIP-919) share ids with brokers in combined
			// mode; mapping them would repoint a broker's listener at its
			// controller port. Brokers refuse this endpoint type anyway.
			break
		}
		for i := range r.Brokers {
			b := &r.Brokers[i]
			err = firstErr(err, apply(b.NodeID, &b.Host, &b.Port))
		}
	case *kmsg.ProduceResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			err = firstErr(err, apply(b.NodeID, &b.Host, &b.Port))
		}
	case *kmsg.FetchResponse:
		for i := range r.Brokers {
			b := &r.Brokers[i]
			err = firstErr(err, apply(b.NodeID, &b.Host, &b.Port))
		}
	case *kmsg.ShareFetchResponse:
		for i := range r.NodeEndpoints {
			b := &r.NodeEndpoints[i]
			err = firstErr(err, apply(b.NodeID, &b.Host, &b.Port))
		}
	case *kmsg.ShareAcknowledgeResponse:
		for i := range r.NodeEndpoints {
			b := &r.NodeEndpoints[i]
			err = firstErr(err, apply(b.NodeID, &b.Host, &b.Port))
		}
	default:
		return false, fmt.Errorf("%s responses carry no addresses to rewrite", kmsg.NameForKey(resp.Key()))
	}
	return n > 0, err
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
