package proxy

// Heartbeat, every version kmsg decodes (v0–v4), passed on unchanged, the
// answer too. eosproxy notes what the answer says of the member: a NONE or
// REBALANCE_IN_PROGRESS answer keeps the member in its generation. It judges
// a TxnOffsetCommit's member by what it has seen, as Kafka's group
// coordinator does (groups.go, groupcheck.go). A request it cannot read, or a
// newer version, passes unobserved: the backend judges it.

func handleHeartbeat(c *conn, r *request) error { return observeGroup(c, r) }

// observeGroup passes on a group request whose answer eosproxy notes
// (Heartbeat, LeaveGroup, SyncGroup, ConsumerGroupHeartbeat).
func observeGroup(c *conn, r *request) error {
	if obs := c.p.groups.groupObservation(r.hdr, r.frame); obs != nil {
		r.slot.answer = groupObserver(obs)
	}
	return nil
}

// groupObserver notes the backend's answer to a group request; it passes
// unchanged.
type groupObserver func(version int16, body []byte)

func (o groupObserver) respond(c *conn, s *slot, body []byte) ([]byte, error) {
	o(s.ver, body)
	return nil, nil
}
