package saga

import (
	"slices"
	"testing"
	"time"
)

// TestTimeHeapPopsEarliestFirst: values come out by time whatever order
// they went in, Peek shows the next time without taking it, and Filter
// drops the refused values and keeps the order of the rest.
func TestTimeHeapPopsEarliestFirst(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	var h timeHeap[string]
	for _, s := range []int{5, 1, 4, 2, 3, 6} {
		h.Push(at(s), string(rune('a'+s-1)))
	}
	if got := h.Peek(); !got.Equal(at(1)) || h.Len() != 6 {
		t.Fatalf("Peek = %v with %d values, want %v with 6", got, h.Len(), at(1))
	}
	h.Filter(func(v string) bool { return v != "b" && v != "e" })
	if h.Len() != 4 {
		t.Fatalf("%d values after filtering 2 of 6, want 4", h.Len())
	}
	var order []string
	for h.Len() > 0 {
		next := h.Peek()
		when, v := h.Pop()
		if !when.Equal(next) {
			t.Fatalf("Pop returned %v, Peek said %v", when, next)
		}
		order = append(order, v)
	}
	if want := []string{"a", "c", "d", "f"}; !slices.Equal(order, want) {
		t.Fatalf("popped %v, want %v", order, want)
	}
}
