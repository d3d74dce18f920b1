// Package proxy holds eosproxy's sockets to clients: the bootstrap listener
// and one listener per upstream broker, the per-connection read and write
// loops that keep each client's responses in request order, and the map
// from upstream broker ids to the addresses clients are told. Bytes are
// handed to package protocol for any decoding; nothing here parses the wire
// format itself. Connections to the backend, and every request eosproxy
// makes of it on its own behalf, are package upstream's.
package proxy
