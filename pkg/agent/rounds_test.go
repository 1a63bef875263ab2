package agent

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRoundIsFresherThanTheCaller: whatever the interleaving, a caller's
// answer comes from a fetch that began after the caller asked — the
// guarantee a read of its own would give — and callers that wait together
// share one fetch.
func TestRoundIsFresherThanTheCaller(t *testing.T) {
	var (
		r       Rounds[int, map[int]int64]
		clock   atomic.Int64 // a logical clock: ticks on every ask and every fetch start
		fetches atomic.Int32
	)
	fetch := func(_ context.Context, keys []int) (map[int]int64, error) {
		fetches.Add(1)
		began := clock.Add(1)
		time.Sleep(2 * time.Millisecond) // a read takes a while
		out := map[int]int64{}
		for _, k := range keys {
			out[k] = began
		}
		return out, nil
	}
	const callers = 200
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i%20) * time.Millisecond)
			asked := clock.Add(1)
			got, err := r.Get(context.Background(), i, fetch)
			if err != nil {
				errs <- err
				return
			}
			began, ok := got[i]
			switch {
			case !ok:
				errs <- errors.New("the round's fetch was not given this caller's key")
			case began <= asked:
				errs <- errors.New("answered by a fetch that began before the caller asked")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := fetches.Load(); n >= callers/2 {
		t.Fatalf("%d callers made %d fetches: waiting callers do not share a round", callers, n)
	}
	t.Logf("%d callers, %d fetches", callers, fetches.Load())
}

// TestRoundKeysAreTheWaitingCallers': the fetch is given the keys of the
// callers it answers, each once, sorted by sortedKeys where it needs them.
func TestRoundKeysAreTheWaitingCallers(t *testing.T) {
	var r Rounds[string, []string]
	release := make(chan struct{})
	first := make(chan struct{})
	var once sync.Once
	fetch := func(_ context.Context, keys []string) ([]string, error) {
		once.Do(func() { close(first) })
		<-release
		out := slices.Clone(keys)
		slices.Sort(out)
		return out, nil
	}
	// One caller starts a round and holds it; three more (one twice) wait
	// for the next.
	go func() { _, _ = r.Get(context.Background(), "zero", fetch) }()
	<-first
	var wg sync.WaitGroup
	got := make([][]string, 4)
	for i, k := range []string{"b", "a", "c", "a"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = r.Get(context.Background(), k, fetch)
		}()
	}
	waitForRound(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.next != nil && r.next.waiters == 4
	})
	close(release)
	wg.Wait()
	for i, g := range got {
		if !slices.Equal(g, []string{"a", "b", "c"}) {
			t.Fatalf("caller %d: the round fetched %v, want the waiting callers' keys [a b c]", i, g)
		}
	}
}

// TestRoundErrorsAndCancellation: a failed or panicking fetch fails its
// round's callers (and only them); a caller whose context ends leaves
// without stopping the round for the others.
func TestRoundErrorsAndCancellation(t *testing.T) {
	var (
		r    Rounds[struct{}, int]
		mode atomic.Int32
	)
	boom := errors.New("boom")
	fetch := func(context.Context, []struct{}) (int, error) {
		switch mode.Load() {
		case 0:
			return 0, boom
		case 1:
			panic("bad")
		}
		return 7, nil
	}
	if _, err := r.Get(context.Background(), struct{}{}, fetch); !errors.Is(err, boom) {
		t.Fatalf("a failed fetch gave %v, want its error", err)
	}
	mode.Store(1)
	if _, err := r.Get(context.Background(), struct{}{}, fetch); err == nil {
		t.Fatal("a panicking fetch gave no error")
	}
	mode.Store(2)
	if v, err := r.Get(context.Background(), struct{}{}, fetch); err != nil || v != 7 {
		t.Fatalf("after a failed round: %v, %v; want 7, nil", v, err)
	}

	var r2 Rounds[struct{}, int]
	release := make(chan struct{})
	slow := func(context.Context, []struct{}) (int, error) { <-release; return 9, nil }
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() { _, err := r2.Get(ctx, struct{}{}, slow); left <- err }()
	stayed := make(chan int, 1)
	go func() { v, _ := r2.Get(context.Background(), struct{}{}, slow); stayed <- v }()
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled caller got %v, want context.Canceled", err)
	}
	close(release)
	if v := <-stayed; v != 9 {
		t.Fatalf("the caller that stayed got %d, want 9", v)
	}
}

func waitForRound(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRoundsRest: under steady demand a round does not follow the last one
// at once: it waits as long as the last one took, so the reads take at most
// about half of the time.
func TestRoundsRest(t *testing.T) {
	var (
		r    = Rounds[int, int]{Rest: true}
		mu   sync.Mutex
		busy time.Duration
	)
	const took = 20 * time.Millisecond
	fetch := func(context.Context, []int) (int, error) {
		time.Sleep(took)
		mu.Lock()
		busy += took
		mu.Unlock()
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, _ = r.Get(ctx, i, fetch)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	if busy > elapsed*6/10 {
		t.Fatalf("reads ran %v of %v under steady demand: want at most about half", busy, elapsed)
	}
}
