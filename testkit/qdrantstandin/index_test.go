package qdrantstandin

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/qdrant/go-client/qdrant"
)

// TestKeywordIndexAgreesWithScan: after random upserts, replacements and
// deletions (through the same calls Upsert and Delete make), every filter
// passes exactly the points a scan of every point passes, in id order.
func TestKeywordIndexAgreesWithScan(t *testing.T) {
	c := &collection{points: map[pointKey]*point{}}
	r := rand.New(rand.NewPCG(3, 4))
	words := []string{"a", "b", "c", "d"}
	put := func(id uint64) {
		payload := map[string]*qdrant.Value{}
		switch r.IntN(4) {
		case 0:
			payload["kind"] = qdrant.NewValueString(words[r.IntN(len(words))])
		case 1:
			payload["kind"] = qdrant.NewValueFromList(qdrant.NewValueString(words[r.IntN(len(words))]), qdrant.NewValueString(words[r.IntN(len(words))]))
		case 2:
			payload["kind"] = qdrant.NewValueInt(int64(r.IntN(3)))
		}
		if r.IntN(2) == 0 {
			payload["tenant"] = qdrant.NewValueString(fmt.Sprint("t", r.IntN(5)))
		}
		p := &point{id: pointKey{num: id}, payload: payload}
		if old, ok := c.points[p.id]; ok {
			c.unindexed(old)
		}
		c.points[p.id] = p
		c.indexed(p)
	}
	for range 3000 {
		id := uint64(r.IntN(300))
		if r.IntN(4) == 0 {
			if p, ok := c.points[pointKey{num: id}]; ok {
				c.unindexed(p)
				delete(c.points, p.id)
			}
			continue
		}
		put(id)
	}
	kw := func(k string, v ...string) *qdrant.Condition {
		if len(v) == 1 {
			return qdrant.NewMatchKeyword(k, v[0])
		}
		return qdrant.NewMatchKeywords(k, v...)
	}
	filters := []*qdrant.Filter{
		nil,
		{Must: []*qdrant.Condition{kw("kind", "a")}},
		{Must: []*qdrant.Condition{kw("kind", "b", "c"), kw("tenant", "t1")}},
		{Must: []*qdrant.Condition{kw("kind", "a", "b", "c")}, Should: []*qdrant.Condition{kw("tenant", "t1"), qdrant.NewHasID(qdrant.NewIDNum(9))}},
		{Should: []*qdrant.Condition{kw("kind", "d"), kw("tenant", "t2", "t3")}},
		{Should: []*qdrant.Condition{kw("kind", "d"), qdrant.NewHasID(qdrant.NewIDNum(7), qdrant.NewIDNum(8))}},
		{Should: []*qdrant.Condition{kw("kind", "d"), qdrant.NewMatchInt("kind", 1)}},
		{Must: []*qdrant.Condition{qdrant.NewMatchInt("kind", 2)}, MustNot: []*qdrant.Condition{kw("tenant", "t0")}},
		{Must: []*qdrant.Condition{kw("kind", "zzz")}},
	}
	for i, f := range filters {
		pred, err := compileFilter(f)
		if err != nil {
			t.Fatal(err)
		}
		ids := func(ps []*point) []uint64 {
			var out []uint64
			for _, p := range ps {
				if pred(p) {
					out = append(out, p.id.num)
				}
			}
			return out
		}
		got, want := ids(c.candidates(f)), ids(c.sortedPoints())
		if !slices.Equal(got, want) {
			t.Errorf("filter %d: index gives %v, scan %v", i, got, want)
		}
		if i == 1 && len(want) == 0 {
			t.Fatal("no point has kind a: the test checks nothing")
		}
	}
	for _, m := range [][]valueMatch{
		{{key: "kind", value: qdrant.NewValueString("a")}},
		{{key: "tenant", value: qdrant.NewValueString("t1")}, {key: "kind", value: qdrant.NewValueString("c")}},
		{{key: "kind", value: qdrant.NewValueInt(1)}},
	} {
		var got, want bool
		for _, p := range c.valueCandidates(m) {
			got = got || matchesAll(p, m)
		}
		for _, p := range c.points {
			want = want || matchesAll(p, m)
		}
		if got != want {
			t.Errorf("value_exists %v: index says %v, scan %v", m, got, want)
		}
	}
}
