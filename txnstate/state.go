package txnstate

import "fmt"

// State is where a transactional id stands. The numeric values are Kafka's
// TransactionState ids (TransactionState.java), so a persisted state reads the
// same as in Kafka's __transaction_state log.
type State int8

const (
	// Empty: no transaction open; the producer id and epoch are assigned.
	Empty State = 0
	// Ongoing: partitions or offsets have been added; data is being buffered.
	Ongoing State = 1
	// PrepareCommit: the commit decision is durable; buffered data is being
	// forwarded to the backend (Kafka: markers being written).
	PrepareCommit State = 2
	// PrepareAbort: the abort decision is durable; buffered data is being dropped.
	PrepareAbort State = 3
	// CompleteCommit: everything of the transaction reached the backend.
	CompleteCommit State = 4
	// CompleteAbort: everything of the transaction was dropped.
	CompleteAbort State = 5
	// Dead: the transactional id expired and is being removed.
	Dead State = 6
	// PrepareEpochFence: the coordinator is fencing the producer's epoch
	// before aborting its ongoing transaction. In Kafka it only ever exists as
	// a pending state and is never written to the log; the decision functions
	// here go from Ongoing straight to PrepareAbort with the fenced epoch, and
	// treat a stored PrepareEpochFence as "fence in progress".
	PrepareEpochFence State = 7

	numStates = 8
)

var stateNames = [numStates]string{
	Empty:             "Empty",
	Ongoing:           "Ongoing",
	PrepareCommit:     "PrepareCommit",
	PrepareAbort:      "PrepareAbort",
	CompleteCommit:    "CompleteCommit",
	CompleteAbort:     "CompleteAbort",
	Dead:              "Dead",
	PrepareEpochFence: "PrepareEpochFence",
}

// String returns Kafka's name for the state, the one DescribeTransactions and
// ListTransactions report.
func (s State) String() string {
	if s.Valid() {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int8(s))
}

// Valid reports whether s is one of the eight known states.
func (s State) Valid() bool { return s >= 0 && s < numStates }

// States lists every state, in id order; handy for tables and tests.
func States() []State {
	out := make([]State, numStates)
	for i := range out {
		out[i] = State(i)
	}
	return out
}

// ParseState maps Kafka's state name back to the State (ListTransactions
// filters by name).
func ParseState(name string) (State, bool) {
	for i, n := range stateNames {
		if n == name {
			return State(i), true
		}
	}
	return 0, false
}

// validPrevious is the whole state machine: for each target state, the
// states it may be entered from. It is Kafka's validPreviousStates
// (TransactionState.java, 4.x), including KIP-890's additions that let
// Empty, CompleteCommit and CompleteAbort go to PrepareAbort (a TV2 client
// unsure of the server's state may always abort).
var validPrevious = [numStates][]State{
	Empty:             {Empty, CompleteCommit, CompleteAbort},
	Ongoing:           {Ongoing, Empty, CompleteCommit, CompleteAbort},
	PrepareCommit:     {Ongoing},
	PrepareAbort:      {Ongoing, PrepareEpochFence, Empty, CompleteCommit, CompleteAbort},
	CompleteCommit:    {PrepareCommit},
	CompleteAbort:     {PrepareAbort},
	Dead:              {Empty, CompleteAbort, CompleteCommit},
	PrepareEpochFence: {Ongoing},
}

// CanTransition reports whether the state machine allows from → to. It is the
// single place transitions are checked; every decision function's output goes
// through it.
func CanTransition(from, to State) bool {
	if !from.Valid() || !to.Valid() {
		return false
	}
	for _, p := range validPrevious[to] {
		if p == from {
			return true
		}
	}
	return false
}

// ExpirationAllowed reports whether a transactional id in state s may be
// expired after transactional.id.expiration.ms of inactivity (Kafka:
// TransactionState.isExpirationAllowed): only when no transaction is open.
func (s State) ExpirationAllowed() bool {
	return s == Empty || s == CompleteCommit || s == CompleteAbort
}
