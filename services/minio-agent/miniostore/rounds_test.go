package miniostore

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
		r       rounds[int, map[int]int64]
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
			got, err := r.get(context.Background(), i, fetch)
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
	var r rounds[string, []string]
	release := make(chan struct{})
	first := make(chan struct{})
	var once sync.Once
	fetch := func(_ context.Context, keys []string) ([]string, error) {
		once.Do(func() { close(first) })
		<-release
		return sortedKeys(keys), nil
	}
	// One caller starts a round and holds it; three more (one twice) wait
	// for the next.
	go func() { _, _ = r.get(context.Background(), "zero", fetch) }()
	<-first
	var wg sync.WaitGroup
	got := make([][]string, 4)
	for i, k := range []string{"b", "a", "c", "a"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = r.get(context.Background(), k, fetch)
		}()
	}
	waitFor(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.next != nil && len(r.next.keys) == 3
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
	var r rounds[struct{}, int]
	boom := errors.New("boom")
	if _, err := r.get(context.Background(), struct{}{}, func(context.Context, []struct{}) (int, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Fatalf("a failed fetch gave %v, want its error", err)
	}
	_, err := r.get(context.Background(), struct{}{}, func(context.Context, []struct{}) (int, error) { panic("bad") })
	if err == nil {
		t.Fatal("a panicking fetch gave no error")
	}
	if v, err := r.get(context.Background(), struct{}{}, func(context.Context, []struct{}) (int, error) { return 7, nil }); err != nil || v != 7 {
		t.Fatalf("after a failed round: %v, %v; want 7, nil", v, err)
	}

	release := make(chan struct{})
	slow := func(context.Context, []struct{}) (int, error) { <-release; return 9, nil }
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() { _, err := r.get(ctx, struct{}{}, slow); left <- err }()
	stayed := make(chan int, 1)
	go func() { v, _ := r.get(context.Background(), struct{}{}, slow); stayed <- v }()
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled caller got %v, want context.Canceled", err)
	}
	close(release)
	if v := <-stayed; v != 9 {
		t.Fatalf("the caller that stayed got %d, want 9", v)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
