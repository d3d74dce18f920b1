package proxy

// LeaveGroup, every version kmsg decodes (v0–v5), passed on unchanged, the
// answer too. eosproxy notes what the answer says of the member: the members
// that left are gone, and their commits refused from then on. It judges a
// TxnOffsetCommit's member by what it has seen, as Kafka's group coordinator
// does (groups.go, groupcheck.go). A request it cannot read, or a newer
// version, passes unobserved: the backend judges it.

func handleLeaveGroup(c *conn, r *request) error { return observeGroup(c, r) }
