package proxy

// ShareFetch, every version kmsg decodes (v0–v2), passed on; the node
// endpoints of an answer (a new leader) are replaced with eosproxy's
// listeners, as in Metadata (03_metadata.go).

func handleShareFetch(c *conn, r *request) error { return passMapped(c, r) }
