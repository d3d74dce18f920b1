package proxy

// Fetch v0–v15, passed on; the answer streams back untouched.
//
// From v16 an answer may end with broker addresses (KIP-951), which
// eosproxy would have to rewrite, holding every answer whole on the path
// that carries nearly all of a consumer's bytes. So eosproxy advertises up
// to v15 only and closes the connection on a newer version, as Kafka does on
// a version it does not support; clients learn a new leader from Metadata.

func handleFetch(c *conn, r *request) error { return passMapped(c, r) }
