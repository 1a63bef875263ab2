package qdrantstandin

import (
	"slices"
	"strings"

	"github.com/qdrant/go-client/qdrant"
)

// Why this file exists: tenantprov's system collection holds a record per
// tenant and per token, and every request that reads it filters on a
// keyword field (tenant, kind, token id), as do value_exists claims. Real
// Qdrant answers those from a payload index (the agent creates one on each
// field it filters by) in O(log n + matches); a scan of every point per
// request made the stand-in's cost, and so the agents' measured cost,
// grow with the number of tenants. keywordIndex narrows a filter's
// candidates the way a payload index would — on every top-level key: the
// stand-in has no CreateFieldIndex, and the agent indexes every keyword
// field it filters the system collection by. The filter itself is still
// applied to every candidate, so which points match is unchanged.

// keywordIndex maps a top-level payload key to each string value it holds
// (in an array too, as filters read it: flatten(rawValues)) and the points
// holding it.
type keywordIndex map[string]map[string]map[pointKey]struct{}

// indexableKey reports whether a filter key names a top-level payload key
// (no nesting or array syntax), the only keys the index covers.
func indexableKey(k string) bool { return k != "" && !strings.ContainsAny(k, ".[]") }

// keywordsOf calls f with every (key, string) pair of p that a keyword
// match on key would see.
func keywordsOf(p *point, f func(key, value string)) {
	for k := range p.payload {
		if !indexableKey(k) {
			continue
		}
		for _, v := range flatten(rawValues(p.payload, splitPath(k))) {
			if s, ok := v.GetKind().(*qdrant.Value_StringValue); ok {
				f(k, s.StringValue)
			}
		}
	}
}

// indexed records p (after an upsert); the caller holds st.mu for writing.
func (c *collection) indexed(p *point) {
	if c.keywords == nil {
		c.keywords = keywordIndex{}
	}
	keywordsOf(p, func(k, v string) {
		byValue := c.keywords[k]
		if byValue == nil {
			byValue = map[string]map[pointKey]struct{}{}
			c.keywords[k] = byValue
		}
		ids := byValue[v]
		if ids == nil {
			ids = map[pointKey]struct{}{}
			byValue[v] = ids
		}
		ids[p.id] = struct{}{}
	})
}

// unindexed forgets p (before it is replaced or deleted); the caller holds
// st.mu for writing.
func (c *collection) unindexed(p *point) {
	keywordsOf(p, func(k, v string) {
		ids := c.keywords[k][v]
		delete(ids, p.id)
		if len(ids) == 0 {
			delete(c.keywords[k], v)
		}
	})
}

// conditionKeys returns a superset of the ids of the points that can pass
// cond, when the index (or the condition itself) can tell: a keyword or
// keywords match on an indexable key, or has_id.
func (c *collection) conditionKeys(cond *qdrant.Condition) ([]pointKey, bool) {
	if h := cond.GetHasId(); h != nil {
		var out []pointKey
		for _, id := range h.GetHasId() {
			k, err := parsePointID(id)
			if err != nil {
				return nil, false
			}
			out = append(out, k)
		}
		return out, true
	}
	fc := cond.GetField()
	if fc == nil || !indexableKey(fc.GetKey()) {
		return nil, false
	}
	var values []string
	switch o := fc.GetMatch().GetMatchValue().(type) {
	case *qdrant.Match_Keyword:
		values = []string{o.Keyword}
	case *qdrant.Match_Keywords:
		values = o.Keywords.GetStrings()
	default:
		return nil, false
	}
	var out []pointKey
	for _, v := range values {
		for id := range c.keywords[fc.GetKey()][v] {
			out = append(out, id)
		}
	}
	return out, true
}

// candidates returns, in id order, a superset of the points that pass f —
// from the index when one of f's must conditions, or every one of its
// should conditions, is indexed (the smallest such set) — or every point.
// Callers still apply f.
func (c *collection) candidates(f *qdrant.Filter) []*point {
	var best []pointKey
	found := false
	for _, cond := range f.GetMust() {
		if ks, ok := c.conditionKeys(cond); ok && (!found || len(ks) < len(best)) {
			best, found = ks, true
		}
	}
	if should := f.GetShould(); len(should) > 0 {
		// At least one should condition must pass: their union is a
		// superset too; take it when it is the smaller one.
		var union []pointKey
		all := true
		for _, cond := range should {
			ks, ok := c.conditionKeys(cond)
			if !ok {
				all = false
				break
			}
			union = append(union, ks...)
		}
		if all && (!found || len(union) < len(best)) {
			best, found = union, true
		}
	}
	if !found {
		return c.sortedPoints()
	}
	slices.SortFunc(best, func(a, b pointKey) int { return a.compare(b) })
	best = slices.Compact(best)
	out := make([]*point, 0, len(best))
	for _, k := range best {
		if p, ok := c.points[k]; ok {
			out = append(out, p)
		}
	}
	return out
}

// valueCandidates returns a superset of the points matching every pair of
// a value_exists claim: from the index when a pair is a string on an
// indexable key, else every point.
func (c *collection) valueCandidates(matches []valueMatch) []*point {
	for _, m := range matches {
		s, ok := m.value.GetKind().(*qdrant.Value_StringValue)
		if !ok || !indexableKey(m.key) {
			continue
		}
		ids := c.keywords[m.key][s.StringValue]
		out := make([]*point, 0, len(ids))
		for id := range ids {
			if p, ok := c.points[id]; ok {
				out = append(out, p)
			}
		}
		return out
	}
	out := make([]*point, 0, len(c.points))
	for _, p := range c.points {
		out = append(out, p)
	}
	return out
}
