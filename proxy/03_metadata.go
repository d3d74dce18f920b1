package proxy

// Metadata, every version kmsg decodes (v0–v13), passed on; the answer's
// broker addresses are replaced with the listeners eosproxy opens for those
// brokers, so clients reach every broker through eosproxy. eosproxy
// advertises no newer version, and closes the connection on one, as Kafka
// does on a version it does not support.

func handleMetadata(c *conn, r *request) error { return passMapped(c, r) }
