package proxy

// ConsumerGroupHeartbeat, every version kmsg decodes (v0–v1), passed on
// unchanged, the answer too. eosproxy notes what the answer says of the
// member: the member's epoch (KIP-848), or that it left. It judges a
// TxnOffsetCommit's member by what it has seen, as Kafka's group coordinator
// does (groups.go, groupcheck.go). A request it cannot read, or a newer
// version, passes unobserved: the backend judges it.

func handleConsumerGroupHeartbeat(c *conn, r *request) error { return observeGroup(c, r) }
