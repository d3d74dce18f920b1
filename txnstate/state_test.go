package txnstate

import "testing"

func TestStateNames(t *testing.T) {
	want := map[State]string{
		Empty: "Empty", Ongoing: "Ongoing", PrepareCommit: "PrepareCommit",
		PrepareAbort: "PrepareAbort", CompleteCommit: "CompleteCommit",
		CompleteAbort: "CompleteAbort", Dead: "Dead", PrepareEpochFence: "PrepareEpochFence",
	}
	for s, name := range want {
		if s.String() != name {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), name)
		}
		if got, ok := ParseState(name); !ok || got != s {
			t.Errorf("ParseState(%q) = %v, %v", name, got, ok)
		}
	}
	if got := State(8).String(); got != "State(8)" {
		t.Errorf("unknown state prints %q", got)
	}
	if _, ok := ParseState("Bogus"); ok {
		t.Error("ParseState accepted a bogus name")
	}
}

// TestTransitionTable spells out, edge by edge, Kafka 4.x's
// validPreviousStates (TransactionState.java), so a change to the table in
// state.go has to be made twice to go unnoticed.
func TestTransitionTable(t *testing.T) {
	E, O, PC, PA, CC, CA, D, PF := Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, Dead, PrepareEpochFence
	legal := map[[2]State]bool{
		{E, E}: true, {CC, E}: true, {CA, E}: true,
		{O, O}: true, {E, O}: true, {CC, O}: true, {CA, O}: true,
		{O, PC}: true,
		{O, PA}: true, {PF, PA}: true, {E, PA}: true, {CC, PA}: true, {CA, PA}: true,
		{PC, CC}: true,
		{PA, CA}: true,
		{E, D}:   true, {CA, D}: true, {CC, D}: true,
		{O, PF}: true,
	}
	for _, from := range States() {
		for _, to := range States() {
			if got := CanTransition(from, to); got != legal[[2]State{from, to}] {
				t.Errorf("CanTransition(%v, %v) = %v", from, to, got)
			}
		}
	}
	if CanTransition(State(-1), Empty) || CanTransition(Empty, State(9)) {
		t.Error("unknown states must not transition")
	}
}

func TestExpirationAllowed(t *testing.T) {
	for _, s := range States() {
		want := s == Empty || s == CompleteCommit || s == CompleteAbort
		if s.ExpirationAllowed() != want {
			t.Errorf("%v.ExpirationAllowed() = %v", s, !want)
		}
	}
}
