package proxy

// JoinGroup, every version kmsg decodes (v0–v9), passed on unchanged, the
// answer too; eosproxy notes the member and generation the answer gives
// (groups.go). It judges a TxnOffsetCommit's member by what it has seen, as
// Kafka's group coordinator does (groupcheck.go), asking the backend only
// when that is not enough. A request it cannot read, or a newer version,
// passes unobserved: the backend judges it.

func handleJoinGroup(c *conn, r *request) error {
	if join := parseJoin(r.hdr, r.frame); join != nil {
		r.slot.answer = join
	}
	return nil
}

// respond notes the backend's JoinGroup answer; it passes unchanged.
func (j *joinRequest) respond(c *conn, s *slot, body []byte) ([]byte, error) {
	c.p.groups.noteJoin(j, s.ver, body)
	return nil, nil
}
