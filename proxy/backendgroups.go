package proxy

import (
	"context"

	"github.com/eosproxy/eosproxy/upstream"
)

// describeGroup asks the backend about group.
func (p *Proxy) describeGroup(ctx context.Context, group string) (describedGroup, error) {
	d, err := p.up.DescribeGroup(ctx, group)
	return described(d), err
}

func described(d upstream.DescribedGroup) describedGroup {
	out := describedGroup{exists: d.Exists, consumer: d.Consumer, empty: d.Empty}
	for _, m := range d.Members {
		out.members = append(out.members, groupMember{generation: m.Generation, member: m.Member, instance: m.Instance})
	}
	return out
}

// backendGroups is upstream.Groups over the groups seen in client traffic:
// a decided transaction's offsets are committed as a member it knows.
type backendGroups struct{ p *Proxy }

func (g backendGroups) Candidates(group string) []upstream.GroupMember {
	var out []upstream.GroupMember
	for _, m := range g.p.groups.candidates(group) {
		out = append(out, upstream.GroupMember{Generation: m.generation, Member: m.member, Instance: m.instance})
	}
	return out
}

func (g backendGroups) Learn(group string, d upstream.DescribedGroup) {
	g.p.groups.learn(group, described(d))
}

func (g backendGroups) NoteBypass(group string, d upstream.DescribedGroup) []string {
	return g.p.noteBypass(group, described(d))
}
