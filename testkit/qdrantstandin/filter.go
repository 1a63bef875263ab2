package qdrantstandin

import (
	"slices"
	"strconv"
	"strings"

	"github.com/qdrant/go-client/qdrant"
)

// predicate decides whether a point passes a filter.
type predicate func(*point) bool

func matchAll(*point) bool { return true }

// compileFilter turns a Qdrant filter into a predicate, rejecting what the
// stand-in does not implement rather than guessing.
func compileFilter(f *qdrant.Filter) (predicate, error) {
	if f == nil {
		return matchAll, nil
	}
	must, err := compileConditions(f.GetMust())
	if err != nil {
		return nil, err
	}
	should, err := compileConditions(f.GetShould())
	if err != nil {
		return nil, err
	}
	mustNot, err := compileConditions(f.GetMustNot())
	if err != nil {
		return nil, err
	}
	var minShould []predicate
	var minCount uint64
	if ms := f.GetMinShould(); ms != nil {
		if minShould, err = compileConditions(ms.GetConditions()); err != nil {
			return nil, err
		}
		minCount = ms.GetMinCount()
	}
	return func(p *point) bool {
		for _, c := range must {
			if !c(p) {
				return false
			}
		}
		for _, c := range mustNot {
			if c(p) {
				return false
			}
		}
		if len(should) > 0 && !slices.ContainsFunc(should, func(c predicate) bool { return c(p) }) {
			return false
		}
		if f.GetMinShould() != nil {
			var n uint64
			for _, c := range minShould {
				if c(p) {
					n++
				}
			}
			if n < minCount {
				return false
			}
		}
		return true
	}, nil
}

func compileConditions(conds []*qdrant.Condition) ([]predicate, error) {
	out := make([]predicate, 0, len(conds))
	for _, c := range conds {
		p, err := compileCondition(c)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func compileCondition(c *qdrant.Condition) (predicate, error) {
	switch o := c.GetConditionOneOf().(type) {
	case *qdrant.Condition_Field:
		return compileField(o.Field)
	case *qdrant.Condition_Filter:
		return compileFilter(o.Filter)
	case *qdrant.Condition_HasId:
		ids := map[pointKey]bool{}
		for _, id := range o.HasId.GetHasId() {
			k, err := parsePointID(id)
			if err != nil {
				return nil, err
			}
			ids[k] = true
		}
		return func(p *point) bool { return ids[p.id] }, nil
	case *qdrant.Condition_IsEmpty:
		path := splitPath(o.IsEmpty.GetKey())
		return func(p *point) bool { return isEmpty(rawValues(p.payload, path)) }, nil
	case *qdrant.Condition_IsNull:
		path := splitPath(o.IsNull.GetKey())
		return func(p *point) bool { return hasNull(rawValues(p.payload, path)) }, nil
	case *qdrant.Condition_HasVector:
		name := o.HasVector.GetHasVector()
		return func(*point) bool { return name == "" }, nil
	case *qdrant.Condition_Nested:
		return nil, errUnsupported("nested filter conditions")
	}
	return nil, errBadInput("Empty condition is not allowed")
}

func compileField(fc *qdrant.FieldCondition) (predicate, error) {
	path := splitPath(fc.GetKey())
	var checks []func(raw []*qdrant.Value) bool
	if m := fc.GetMatch(); m != nil {
		check, err := compileMatch(m)
		if err != nil {
			return nil, err
		}
		checks = append(checks, check)
	}
	if r := fc.GetRange(); r != nil {
		checks = append(checks, func(raw []*qdrant.Value) bool {
			return slices.ContainsFunc(flatten(raw), func(v *qdrant.Value) bool {
				x, ok := number(v)
				return ok && inRange(x, r)
			})
		})
	}
	if fc.IsEmpty != nil {
		want := fc.GetIsEmpty()
		checks = append(checks, func(raw []*qdrant.Value) bool { return isEmpty(raw) == want })
	}
	if fc.IsNull != nil {
		want := fc.GetIsNull()
		checks = append(checks, func(raw []*qdrant.Value) bool { return hasNull(raw) == want })
	}
	switch {
	case fc.GetGeoBoundingBox() != nil, fc.GetGeoRadius() != nil, fc.GetGeoPolygon() != nil:
		return nil, errUnsupported("geo conditions")
	case fc.GetValuesCount() != nil:
		return nil, errUnsupported("values_count conditions")
	case fc.GetDatetimeRange() != nil:
		return nil, errUnsupported("datetime_range conditions")
	case len(checks) == 0:
		return nil, errBadInput("At least one field condition must be specified for key %s", fc.GetKey())
	}
	return func(p *point) bool {
		raw := rawValues(p.payload, path)
		for _, c := range checks {
			if !c(raw) {
				return false
			}
		}
		return true
	}, nil
}

func compileMatch(m *qdrant.Match) (func([]*qdrant.Value) bool, error) {
	anyValue := func(f func(*qdrant.Value) bool) func([]*qdrant.Value) bool {
		return func(raw []*qdrant.Value) bool { return slices.ContainsFunc(flatten(raw), f) }
	}
	switch o := m.GetMatchValue().(type) {
	case *qdrant.Match_Keyword:
		return anyValue(func(v *qdrant.Value) bool { return isString(v, o.Keyword) }), nil
	case *qdrant.Match_Integer:
		return anyValue(func(v *qdrant.Value) bool { return isInteger(v, o.Integer) }), nil
	case *qdrant.Match_Boolean:
		return anyValue(func(v *qdrant.Value) bool {
			b, ok := v.GetKind().(*qdrant.Value_BoolValue)
			return ok && b.BoolValue == o.Boolean
		}), nil
	case *qdrant.Match_Text:
		// Without a full-text index Qdrant matches text as a substring.
		return anyValue(func(v *qdrant.Value) bool {
			s, ok := v.GetKind().(*qdrant.Value_StringValue)
			return ok && strings.Contains(s.StringValue, o.Text)
		}), nil
	case *qdrant.Match_Keywords:
		set := o.Keywords.GetStrings()
		return anyValue(func(v *qdrant.Value) bool {
			s, ok := v.GetKind().(*qdrant.Value_StringValue)
			return ok && slices.Contains(set, s.StringValue)
		}), nil
	case *qdrant.Match_Integers:
		set := o.Integers.GetIntegers()
		return anyValue(func(v *qdrant.Value) bool {
			i, ok := v.GetKind().(*qdrant.Value_IntegerValue)
			return ok && slices.Contains(set, i.IntegerValue)
		}), nil
	case *qdrant.Match_ExceptKeywords:
		set := o.ExceptKeywords.GetStrings()
		return exceptMatch(func(v *qdrant.Value) (bool, bool) {
			s, ok := v.GetKind().(*qdrant.Value_StringValue)
			return ok && slices.Contains(set, s.StringValue), ok
		}), nil
	case *qdrant.Match_ExceptIntegers:
		set := o.ExceptIntegers.GetIntegers()
		return exceptMatch(func(v *qdrant.Value) (bool, bool) {
			i, ok := v.GetKind().(*qdrant.Value_IntegerValue)
			return ok && slices.Contains(set, i.IntegerValue), ok
		}), nil
	case *qdrant.Match_Phrase, *qdrant.Match_TextAny:
		return nil, errUnsupported("phrase and text_any matches")
	}
	return nil, errBadInput("Empty match is not allowed")
}

// exceptMatch follows Qdrant's MatchExcept: a missing field matches, and a
// field matches when some value is not excluded (null never does).
func exceptMatch(excluded func(*qdrant.Value) (hit, sameType bool)) func([]*qdrant.Value) bool {
	return func(raw []*qdrant.Value) bool {
		vals := flatten(raw)
		if len(vals) == 0 {
			return true
		}
		return slices.ContainsFunc(vals, func(v *qdrant.Value) bool {
			if _, null := v.GetKind().(*qdrant.Value_NullValue); null {
				return false
			}
			hit, _ := excluded(v)
			return !hit
		})
	}
}

func isString(v *qdrant.Value, want string) bool {
	s, ok := v.GetKind().(*qdrant.Value_StringValue)
	return ok && s.StringValue == want
}

func isInteger(v *qdrant.Value, want int64) bool {
	i, ok := v.GetKind().(*qdrant.Value_IntegerValue)
	return ok && i.IntegerValue == want
}

// valueEqual compares a stored value with a value_exists match value.
func valueEqual(stored, want *qdrant.Value) bool {
	switch w := want.GetKind().(type) {
	case *qdrant.Value_StringValue:
		return isString(stored, w.StringValue)
	case *qdrant.Value_IntegerValue:
		return isInteger(stored, w.IntegerValue)
	case *qdrant.Value_BoolValue:
		b, ok := stored.GetKind().(*qdrant.Value_BoolValue)
		return ok && b.BoolValue == w.BoolValue
	}
	return false
}

func number(v *qdrant.Value) (float64, bool) {
	switch k := v.GetKind().(type) {
	case *qdrant.Value_IntegerValue:
		return float64(k.IntegerValue), true
	case *qdrant.Value_DoubleValue:
		return k.DoubleValue, true
	}
	return 0, false
}

func inRange(x float64, r *qdrant.Range) bool {
	return (r.Lt == nil || x < r.GetLt()) && (r.Gt == nil || x > r.GetGt()) &&
		(r.Lte == nil || x <= r.GetLte()) && (r.Gte == nil || x >= r.GetGte())
}

func isEmpty(raw []*qdrant.Value) bool {
	for _, v := range raw {
		switch k := v.GetKind().(type) {
		case *qdrant.Value_NullValue:
		case *qdrant.Value_ListValue:
			if len(k.ListValue.GetValues()) > 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func hasNull(raw []*qdrant.Value) bool {
	return slices.ContainsFunc(raw, func(v *qdrant.Value) bool {
		_, ok := v.GetKind().(*qdrant.Value_NullValue)
		return ok
	})
}

// pathSegment is one step of a Qdrant JSON path: a key, optionally followed
// by [] (every element) or [n] (one element).
type pathSegment struct {
	key   string
	all   bool
	index int // -1 when absent
}

func splitPath(path string) []pathSegment {
	var out []pathSegment
	for part := range strings.SplitSeq(path, ".") {
		seg := pathSegment{key: part, index: -1}
		if k, ok := strings.CutSuffix(part, "[]"); ok {
			seg.key, seg.all = k, true
		} else if open := strings.LastIndexByte(part, '['); open > 0 && strings.HasSuffix(part, "]") {
			if n, err := strconv.Atoi(part[open+1 : len(part)-1]); err == nil && n >= 0 {
				seg.key, seg.index = part[:open], n
			}
		}
		out = append(out, seg)
	}
	return out
}

// rawValues returns the values at path, descending through arrays of
// objects on the way (as Qdrant does) but not flattening the final value.
func rawValues(payload map[string]*qdrant.Value, path []pathSegment) []*qdrant.Value {
	cur := []map[string]*qdrant.Value{payload}
	var vals []*qdrant.Value
	for i, seg := range path {
		vals = vals[:0:0]
		for _, obj := range cur {
			v, ok := obj[seg.key]
			if !ok {
				continue
			}
			switch {
			case seg.all:
				vals = append(vals, v.GetListValue().GetValues()...)
			case seg.index >= 0:
				if l := v.GetListValue().GetValues(); seg.index < len(l) {
					vals = append(vals, l[seg.index])
				}
			default:
				vals = append(vals, v)
			}
		}
		if i == len(path)-1 {
			break
		}
		cur = cur[:0:0]
		for _, v := range vals {
			if s := v.GetStructValue(); s != nil {
				cur = append(cur, s.GetFields())
			}
			for _, e := range v.GetListValue().GetValues() {
				if s := e.GetStructValue(); s != nil {
					cur = append(cur, s.GetFields())
				}
			}
		}
	}
	return vals
}

// flatten expands arrays one level: a match on an array field matches any
// of its elements.
func flatten(raw []*qdrant.Value) []*qdrant.Value {
	var out []*qdrant.Value
	for _, v := range raw {
		if l := v.GetListValue(); l != nil {
			out = append(out, l.GetValues()...)
			continue
		}
		out = append(out, v)
	}
	return out
}

// matchesAll reports whether p's payload has every key/value pair.
func matchesAll(p *point, matches []valueMatch) bool {
	for _, m := range matches {
		if !slices.ContainsFunc(flatten(rawValues(p.payload, splitPath(m.key))), func(v *qdrant.Value) bool { return valueEqual(v, m.value) }) {
			return false
		}
	}
	return true
}
