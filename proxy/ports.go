package proxy

import (
	"encoding/binary"
	"fmt"

	"github.com/eosproxy/eosproxy/store"
)

// PortKeyPrefix is where broker ports are kept: an instance's own, not
// replicated to a cluster's other instances.
var PortKeyPrefix = []byte("proxy/broker-port/")

// DBPorts persists broker-id → port assignments in badger.
type DBPorts struct{ DB *store.DB }

func (s DBPorts) LoadPorts() (map[int32]int32, error) {
	out := map[int32]int32{}
	err := s.DB.Scan(PortKeyPrefix, func(k, v []byte) error {
		if len(k) != len(PortKeyPrefix)+4 || len(v) != 4 {
			return fmt.Errorf("corrupt broker port entry %q", k)
		}
		out[int32(binary.BigEndian.Uint32(k[len(PortKeyPrefix):]))] = int32(binary.BigEndian.Uint32(v))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load broker ports: %w", err)
	}
	return out, nil
}

func (s DBPorts) SavePort(id, port int32) error {
	k := binary.BigEndian.AppendUint32(append([]byte{}, PortKeyPrefix...), uint32(id))
	if err := s.DB.Put(k, binary.BigEndian.AppendUint32(nil, uint32(port))); err != nil {
		return fmt.Errorf("save port of broker %d: %w", id, err)
	}
	return nil
}
