package proxy

// DescribeCluster, every version kmsg decodes (v0–v2), passed on; the
// answer's broker addresses are replaced with eosproxy's listeners, as in
// Metadata (03_metadata.go), so admin clients reach brokers through
// eosproxy. Controllers (endpoint type 2) are left alone.

func handleDescribeCluster(c *conn, r *request) error { return passMapped(c, r) }
