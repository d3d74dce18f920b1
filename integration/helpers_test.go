package integration

import (
	"sync"
)

// fixedPorts is a port store shared by two proxies in one test, standing in
// for the badger-backed one across a restart.
type fixedPorts struct {
	mu sync.Mutex
	m  map[int32]int32
}

func (f *fixedPorts) LoadPorts() (map[int32]int32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int32]int32{}
	for k, v := range f.m {
		out[k] = v
	}
	return out, nil
}

func (f *fixedPorts) SavePort(id, port int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[id] = port
	return nil
}
