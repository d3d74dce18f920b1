// Crash points, for tests only: EOSPROXY_TEST_CRASH names instants where
// this process kills itself with SIGKILL, each with a probability per time
// it is reached, so that a test (eoscheck --crash-points) can check the
// recovery from exactly there, which kills from outside at random times
// rarely hit.

package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/eosproxy/eosproxy/cluster"
	"github.com/eosproxy/eosproxy/txnstate"
)

const (
	envTestCrash     = "EOSPROXY_TEST_CRASH"      // point=probability[,point=probability...]
	envTestCrashSeed = "EOSPROXY_TEST_CRASH_SEED" // seed of the draws (default: the clock)
	// msgCrashPoint is the line logged just before the SIGKILL (eoscheck
	// reads it, with its field point).
	msgCrashPoint = "test crash point: SIGKILL"
)

// crashPointNames are the points a spec may name.
var crashPointNames = []string{txnstate.CrashDecisionLogged, txnstate.CrashHalfForwarded, cluster.CrashSetSent, cluster.CrashSetAcked}

// crashPoints is a parsed EOSPROXY_TEST_CRASH; nil when it is not set.
type crashPoints struct {
	prob map[string]float64
	seed uint64
}

// parseCrashPoints reads EOSPROXY_TEST_CRASH and EOSPROXY_TEST_CRASH_SEED.
func parseCrashPoints(getenv func(string) string) (*crashPoints, error) {
	spec := strings.TrimSpace(getenv(envTestCrash))
	if spec == "" {
		return nil, nil
	}
	cp := &crashPoints{prob: map[string]float64{}, seed: uint64(time.Now().UnixNano())}
	for _, part := range strings.Split(spec, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not point=probability", envTestCrash, part)
		}
		name = strings.TrimSpace(name)
		if !slices.Contains(crashPointNames, name) {
			return nil, fmt.Errorf("%s: unknown crash point %q (known: %s)", envTestCrash, name, strings.Join(crashPointNames, ", "))
		}
		p, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || p < 0 || p > 1 {
			return nil, fmt.Errorf("%s: probability of %s %q: want a number from 0 to 1", envTestCrash, name, v)
		}
		if _, dup := cp.prob[name]; dup {
			return nil, fmt.Errorf("%s: crash point %s named twice", envTestCrash, name)
		}
		cp.prob[name] = p
	}
	if s := strings.TrimSpace(getenv(envTestCrashSeed)); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", envTestCrashSeed, s, err)
		}
		cp.seed = seed
	}
	return cp, nil
}

// hook returns the function the packages call at their crash points; nil
// when cp is (no crash points).
func (cp *crashPoints) hook(log zerolog.Logger) func(point string) {
	if cp == nil {
		return nil
	}
	log.Warn().Interface("points", cp.prob).Uint64("seed", cp.seed).Msg("test crash points armed: this process SIGKILLs itself at them (" + envTestCrash + ")")
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(cp.seed, cp.seed^0x9e3779b97f4a7c15))
	return func(point string) {
		p := cp.prob[point]
		if p <= 0 {
			return
		}
		mu.Lock()
		hit := rng.Float64() < p
		if !hit {
			mu.Unlock()
			return
		}
		// Held to the end: no other point draws meanwhile. The line is
		// written (unbuffered) before the signal, so that the test knows
		// which point it was.
		log.Error().Str("point", point).Msg(msgCrashPoint)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal ends the process; nothing here goes on
	}
}
