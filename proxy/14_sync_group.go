package proxy

// SyncGroup, every version kmsg decodes (v0–v5), passed on unchanged, the
// answer too. eosproxy notes what the answer says of the member: a NONE
// answer keeps the member in its generation. It judges a TxnOffsetCommit's
// member by what it has seen, as Kafka's group coordinator does (groups.go,
// groupcheck.go). A request it cannot read, or a newer version, passes
// unobserved: the backend judges it.

func handleSyncGroup(c *conn, r *request) error { return observeGroup(c, r) }
