package saga

import (
	"container/heap"
	"time"
)

// timeHeap is a min-heap of values by time, for the schedules that take
// what fell due: the observation slots and the reconciler's scheduled
// steps. It never deletes a value: its users skip, when they pop it, a
// value a later change made stale. The zero value is an empty heap.
type timeHeap[T any] struct{ items timedItems[T] }

type timed[T any] struct {
	at time.Time
	v  T
}

// Len is the number of values in the heap, stale ones included.
func (h *timeHeap[T]) Len() int { return len(h.items) }

// Push adds v at time at.
func (h *timeHeap[T]) Push(at time.Time, v T) { heap.Push(&h.items, timed[T]{at: at, v: v}) }

// Peek returns the earliest time in the heap, which must not be empty.
func (h *timeHeap[T]) Peek() time.Time { return h.items[0].at }

// Pop removes the earliest value and returns it with its time; the heap
// must not be empty.
func (h *timeHeap[T]) Pop() (time.Time, T) {
	it := heap.Pop(&h.items).(timed[T])
	return it.at, it.v
}

// Filter drops the values keep refuses, in O(n).
func (h *timeHeap[T]) Filter(keep func(T) bool) {
	kept := h.items[:0]
	for _, it := range h.items {
		if keep(it.v) {
			kept = append(kept, it)
		}
	}
	clear(h.items[len(kept):])
	h.items = kept
	heap.Init(&h.items)
}

// timedItems is timeHeap's heap.Interface.
type timedItems[T any] []timed[T]

func (s timedItems[T]) Len() int           { return len(s) }
func (s timedItems[T]) Less(i, j int) bool { return s[i].at.Before(s[j].at) }
func (s timedItems[T]) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }
func (s *timedItems[T]) Push(x any)        { *s = append(*s, x.(timed[T])) }
func (s *timedItems[T]) Pop() any {
	old := *s
	it := old[len(old)-1]
	*s = old[:len(old)-1]
	return it
}
