package protocol

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestAddBrokers(t *testing.T) {
	extra := []Broker{{NodeID: 1, Host: "dup", Port: 1}, {NodeID: 1 << 30, Host: "standby", Port: 9192}}

	md := kmsg.NewPtrMetadataResponse()
	md.Brokers = []kmsg.MetadataResponseBroker{{NodeID: 1, Host: "owner", Port: 9093}}
	if !AddBrokers(md, extra) || len(md.Brokers) != 2 || md.Brokers[0].Host != "owner" || md.Brokers[1].Host != "standby" || md.Brokers[1].Port != 9192 {
		t.Fatalf("metadata brokers %+v", md.Brokers)
	}
	if AddBrokers(md, extra) {
		t.Fatal("added a broker already named")
	}

	dc := kmsg.NewPtrDescribeClusterResponse()
	dc.Brokers = []kmsg.DescribeClusterResponseBroker{{NodeID: 1, Host: "owner", Port: 9093}}
	if !AddBrokers(dc, extra) || len(dc.Brokers) != 2 || dc.Brokers[1].NodeID != 1<<30 {
		t.Fatalf("describe cluster brokers %+v", dc.Brokers)
	}
	ctl := kmsg.NewPtrDescribeClusterResponse()
	ctl.EndpointType = 2
	failed := kmsg.NewPtrMetadataResponse()
	failed.ErrorCode = 1
	if AddBrokers(ctl, extra) || AddBrokers(failed, extra) || len(ctl.Brokers)+len(failed.Brokers) != 0 {
		t.Fatal("brokers added to controllers or to a failed answer")
	}
}
