package saga

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"time"
)

// deepCopy returns a copy of v that shares no mutable memory with it:
// structs and arrays are copied by value, and every map, slice and pointer
// reachable from v is allocated anew (nil stays nil, empty stays empty).
// Strings are shared (they are immutable), and so is a time.Time's
// *Location. v must not contain a cycle of pointers.
//
// It panics — a programming error, which the tests of the types it copies
// catch on their first run — if T holds anything it cannot copy safely: an
// interface, chan, func or unsafe.Pointer anywhere in its types, or an
// unexported field that holds a map, slice or pointer (reflection cannot
// set it, and copying the struct would alias it). The check is on the
// types, so it fails whether or not a value has the field set.
func deepCopy[T any](v T) T {
	var out T
	src := reflect.ValueOf(&v).Elem()
	copyInto(reflect.ValueOf(&out).Elem(), src)
	return out
}

// copyInto deep-copies src into dst, a zero or by-value copy of src.
func copyInto(dst, src reflect.Value) {
	info := typeInfoOf(src.Type())
	if !info.refs {
		dst.Set(src)
		return
	}
	switch src.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			dst.SetZero()
			return
		}
		p := reflect.New(src.Type().Elem())
		copyInto(p.Elem(), src.Elem())
		dst.Set(p)
	case reflect.Slice:
		if src.IsNil() {
			dst.SetZero()
			return
		}
		s := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
		if typeInfoOf(src.Type().Elem()).refs {
			for i := range src.Len() {
				copyInto(s.Index(i), src.Index(i))
			}
		} else {
			reflect.Copy(s, src)
		}
		dst.Set(s)
	case reflect.Map:
		if src.IsNil() {
			dst.SetZero()
			return
		}
		t := src.Type()
		m := reflect.MakeMapWithSize(t, src.Len())
		deepKey, deepElem := typeInfoOf(t.Key()).refs, typeInfoOf(t.Elem()).refs
		for it := src.MapRange(); it.Next(); {
			k, e := it.Key(), it.Value()
			if deepKey {
				k = fresh(k)
			}
			if deepElem {
				e = fresh(e)
			}
			m.SetMapIndex(k, e)
		}
		dst.Set(m)
	case reflect.Array:
		for i := range src.Len() {
			copyInto(dst.Index(i), src.Index(i))
		}
	case reflect.Struct:
		dst.Set(src) // the fields without references, unexported ones too
		for _, i := range info.fields {
			copyInto(dst.Field(i), src.Field(i))
		}
	default:
		panic(fmt.Sprintf("saga: deepCopy: unexpected %s", src.Type())) // typeInfoOf refused it
	}
}

// fresh returns a deep copy of v in a new addressable value.
func fresh(v reflect.Value) reflect.Value {
	c := reflect.New(v.Type()).Elem()
	copyInto(c, v)
	return c
}

// copyInfo is what deepCopy needs to know about a type.
type copyInfo struct {
	refs   bool  // a value holds a map, slice or pointer somewhere
	fields []int // a struct's fields that do
}

var (
	copyInfos sync.Map // reflect.Type → *copyInfo
	timeType  = reflect.TypeFor[time.Time]()
)

// typeInfoOf returns t's copyInfo, working it out (and panicking on what
// deepCopy cannot copy) the first time t is seen.
func typeInfoOf(t reflect.Type) *copyInfo {
	if info, ok := copyInfos.Load(t); ok {
		return info.(*copyInfo)
	}
	info := classify(t, map[reflect.Type]*copyInfo{})
	copyInfos.Store(t, info)
	return info
}

// classify works out t's copyInfo; seen holds the types being worked out,
// so that a recursive type ends.
func classify(t reflect.Type, seen map[reflect.Type]*copyInfo) *copyInfo {
	if info, ok := copyInfos.Load(t); ok {
		return info.(*copyInfo)
	}
	if info, ok := seen[t]; ok {
		return info
	}
	info := &copyInfo{}
	seen[t] = info
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
	case reflect.Pointer, reflect.Slice:
		info.refs = true
		classify(t.Elem(), seen)
	case reflect.Map:
		info.refs = true
		classify(t.Key(), seen)
		classify(t.Elem(), seen)
	case reflect.Array:
		info.refs = classify(t.Elem(), seen).refs
	case reflect.Struct:
		if t == timeType {
			break // immutable: its *Location is never modified
		}
		for i := range t.NumField() {
			f := t.Field(i)
			if !classify(f.Type, seen).refs {
				continue
			}
			if !f.IsExported() {
				panic(fmt.Sprintf("saga: deepCopy: unexported field %s.%s (%s) holds references it cannot copy", t, f.Name, f.Type))
			}
			info.refs = true
			info.fields = append(info.fields, i)
		}
	default: // interface, chan, func, unsafe.Pointer
		panic(fmt.Sprintf("saga: deepCopy cannot copy a %s (%s)", t.Kind(), t))
	}
	return info
}

// compactPayload returns p without the indentation json.Indent adds (a
// newline starts every indented line; json.Marshal writes none outside
// escapes), or p itself when it has none or is not valid JSON.
func compactPayload(p json.RawMessage) json.RawMessage {
	if bytes.IndexByte(p, '\n') < 0 {
		return p
	}
	var b bytes.Buffer
	if err := json.Compact(&b, p); err != nil {
		return p
	}
	return b.Bytes()
}
