// Tests of the producer id allocator.

package dedup

import (
	"sync"
	"testing"
	"time"
)

func TestNewProducerIDUniqueIncreasingAcrossReopen(t *testing.T) {
	tt := newTable(t)
	seen := map[int64]bool{}
	var last int64 = -1
	take := func(tt *testTable, n int, floor int64) {
		t.Helper()
		prev := floor
		for i := 0; i < n; i++ {
			id, err := tt.NewProducerID()
			if err != nil {
				t.Fatal(err)
			}
			if id < 0 {
				t.Fatalf("negative producer id %d", id)
			}
			if id <= prev {
				t.Fatalf("id %d after %d: not increasing (floor %d)", id, prev, floor)
			}
			if seen[id] {
				t.Fatalf("id %d handed out twice", id)
			}
			seen[id] = true
			prev = id
		}
		last = prev
	}
	take(tt, 2500, -1) // crosses two reservation blocks
	for round := 0; round < 3; round++ {
		floor := last
		tt = tt.reopen(t, 24*time.Hour)
		// New ids after a restart are above every id handed out before,
		// whether the last block was used up or not.
		take(tt, []int{1, 999, 1001}[round], floor)
	}
}

func TestNewProducerIDConcurrent(t *testing.T) {
	tt := newTable(t)
	const workers, each = 8, 400
	ids := make(chan int64, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				id, err := tt.NewProducerID()
				if err != nil {
					t.Error(err)
					return
				}
				ids <- id
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("id %d handed out twice", id)
		}
		seen[id] = true
	}
	if len(seen) != workers*each {
		t.Fatalf("%d ids, want %d", len(seen), workers*each)
	}
}
