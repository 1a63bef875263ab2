package saga

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// The record copy (clone.go): checked on a record with every field set,
// found by reflection, so that a field added to events.TenantRecord (or to
// a type it holds) is covered without touching these tests.

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// filler sets every field it is given to a distinct non-zero value.
type filler struct{ n int }

func (f *filler) fill(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	f.n++
	switch {
	case v.Type() == timeType:
		v.Set(reflect.ValueOf(t0.Add(time.Duration(f.n) * time.Second)))
		return
	case v.Type() == rawMessageType:
		v.SetBytes([]byte(fmt.Sprintf(`{"n":%d,"s":"<p%d>","a":[1,{"b":true}]}`, f.n, f.n)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", f.n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(f.n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(f.n))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(f.n) + 0.5)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		f.fill(t, v.Elem(), path)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range v.Len() {
			f.fill(t, v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for i := range 2 {
			k := reflect.New(v.Type().Key()).Elem()
			f.fill(t, k, path+".key")
			e := reflect.New(v.Type().Elem()).Elem()
			f.fill(t, e, fmt.Sprintf("%s[%d]", path, i))
			v.SetMapIndex(k, e)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				t.Fatalf("%s.%s: unexported field: teach the filler to set it", path, v.Type().Field(i).Name)
			}
			f.fill(t, v.Field(i), path+"."+v.Type().Field(i).Name)
		}
	default:
		t.Fatalf("%s: the filler cannot set a %s", path, v.Type())
	}
	if v.IsZero() {
		t.Fatalf("%s: the filler left it zero", path)
	}
}

func filledRecord(t *testing.T) *events.TenantRecord {
	t.Helper()
	rec := &events.TenantRecord{}
	(&filler{}).fill(t, reflect.ValueOf(rec).Elem(), "record")
	return rec
}

// notShared fails if a and b (a copy of a) share a map, a slice's backing
// array or a pointer target anywhere.
func notShared(t *testing.T, a, b reflect.Value, path string) {
	t.Helper()
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() {
			return
		}
		if a.UnsafePointer() == b.UnsafePointer() {
			t.Errorf("%s: the copy shares the pointer target", path)
			return
		}
		notShared(t, a.Elem(), b.Elem(), path)
	case reflect.Slice:
		if a.Cap() > 0 && a.UnsafePointer() == b.UnsafePointer() { // empty ones may all point at one zero-size base
			t.Errorf("%s: the copy shares the slice's array", path)
			return
		}
		for i := range a.Len() {
			notShared(t, a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if a.IsNil() {
			return
		}
		if a.UnsafePointer() == b.UnsafePointer() {
			t.Errorf("%s: the copy shares the map", path)
			return
		}
		for it := a.MapRange(); it.Next(); {
			notShared(t, it.Value(), b.MapIndex(it.Key()), fmt.Sprintf("%s[%v]", path, it.Key()))
		}
	case reflect.Struct:
		for i := range a.NumField() {
			if a.Type().Field(i).IsExported() {
				notShared(t, a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name)
			}
		}
	}
}

// scramble changes every value reachable from v: each leaf, each slice
// element, each map entry (and adds one), through every pointer.
func scramble(v reflect.Value) {
	switch v.Type() {
	case timeType:
		v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Hour)))
		return
	case rawMessageType:
		for i, c := range v.Bytes() { // in place, and still JSON: the digits
			if c >= '0' && c <= '9' {
				v.Bytes()[i] = '0' + (c-'0'+1)%10
			}
		}
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "!")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(v.Float() + 1)
	case reflect.Pointer:
		if !v.IsNil() {
			scramble(v.Elem())
		}
	case reflect.Slice:
		for i := range v.Len() {
			scramble(v.Index(i))
		}
	case reflect.Map:
		if v.IsNil() {
			return
		}
		var extra reflect.Value
		for it := v.MapRange(); it.Next(); {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(it.Value())
			scramble(e) // through a pointer element: its target
			v.SetMapIndex(it.Key(), e)
			extra = e
		}
		if extra.IsValid() {
			k := reflect.New(v.Type().Key()).Elem()
			k.Set(v.MapKeys()[0])
			scramble(k)
			v.SetMapIndex(k, extra)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				scramble(v.Field(i))
			}
		}
	}
}

func TestCloneRecordFilled(t *testing.T) {
	rec := filledRecord(t)
	before := mustJSON(rec)
	c := cloneRecord(rec)
	if !reflect.DeepEqual(rec, c) {
		t.Errorf("the copy differs:\n%s\n%s", before, mustJSON(c))
	}
	if got := mustJSON(c); !bytes.Equal(got, before) {
		t.Errorf("the copy's JSON differs:\n%s\n%s", before, got)
	}
	notShared(t, reflect.ValueOf(rec), reflect.ValueOf(c), "record")
	scramble(reflect.ValueOf(c))
	after, err := json.Marshal(rec)
	if err != nil {
		t.Fatalf("the original no longer encodes after its copy changed: %v", err)
	}
	if !bytes.Equal(after, before) {
		t.Errorf("changing the copy changed the original:\n%s\n%s", before, after)
	}
	if bytes.Equal(mustJSON(c), before) {
		t.Errorf("scramble changed nothing: it checks nothing")
	}
}

// Nil stays nil and empty stays empty, a zero time stays zero.
func TestCloneRecordNilAndEmpty(t *testing.T) {
	if cloneRecord(nil) != nil {
		t.Fatal("cloneRecord(nil) is not nil")
	}
	rec := &events.TenantRecord{Labels: map[string]string{}, Stores: map[events.Store]*events.StoreStatus{events.StoreRedis: nil},
		Past: []*events.PastGeneration{nil, {}}, Outbox: []*events.Effect{}, Timings: &events.SagaTimings{}}
	c := cloneRecord(rec)
	if !reflect.DeepEqual(rec, c) {
		t.Fatalf("the copy differs: %#v", c)
	}
	if c.Labels == nil || c.Outbox == nil || c.Trace != nil || c.Past[0] != nil || c.Past[1].Stores != nil || c.Deadline != nil {
		t.Errorf("nil or empty not kept: %#v", c)
	}
	if c.Stores[events.StoreRedis] != nil || len(c.Stores) != 1 {
		t.Errorf("a nil store status was not kept: %#v", c.Stores)
	}
}

// A record as read back from the registry (stored indented) gets its
// payloads compacted, as the JSON round trip did; the rest is equal.
func TestCloneRecordCompactsStoredPayloads(t *testing.T) {
	fx := fixtures(t)
	rec, _ := Step(policy, fx["active"], deprovisionReq(70), t0.Add(time.Hour))
	if rec == nil || len(rec.Outbox) == 0 {
		t.Fatal("no effects to check")
	}
	var stored bytes.Buffer
	if err := json.Indent(&stored, mustJSON(rec), "", "  "); err != nil {
		t.Fatal(err)
	}
	read, err := events.DecodeTenantRecord(stored.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(read.Outbox[0].Payload, []byte("\n")) {
		t.Fatal("the payload read back is not indented: the test checks nothing")
	}
	c := cloneRecord(read)
	if !reflect.DeepEqual(rec, c) {
		t.Errorf("the copy of the stored record differs from the record:\n%s\n%s", mustJSON(rec), mustJSON(c))
	}
	for i, e := range c.Outbox {
		if !bytes.Equal(e.Payload, rec.Outbox[i].Payload) {
			t.Errorf("effect %s payload %s, want %s", e.ID, e.Payload, rec.Outbox[i].Payload)
		}
	}
}

func TestDeepCopyRefuses(t *testing.T) {
	type unexportedMap struct {
		Name  string
		attrs map[string]string
	}
	type ref struct{ p *int }
	type unexportedNested struct {
		ok  int // an unexported value is copied with its struct
		sub ref
	}
	type withInterface struct{ Details any }
	type withChan struct{ Done chan struct{} }
	type withFunc struct{ Hook func() }
	type deep struct{ Inner []map[string]*withInterface }
	cases := []struct {
		name string
		copy func()
		want string
	}{
		{"unexported map", func() { deepCopy(unexportedMap{Name: "x", attrs: map[string]string{"a": "b"}}) }, "attrs"},
		{"unexported pointer in an unexported struct", func() { deepCopy(&unexportedNested{ok: 1, sub: ref{p: new(int)}}) }, "ref.p"},
		{"interface", func() { deepCopy(withInterface{}) }, "interface"},
		{"chan", func() { deepCopy(withChan{}) }, "chan"},
		{"func", func() { deepCopy(withFunc{}) }, "func"},
		{"interface deep inside, in a nil slice", func() { deepCopy(deep{}) }, "interface"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("no panic")
				}
				if msg := fmt.Sprint(r); !strings.Contains(msg, tc.want) {
					t.Errorf("panic %q does not name %q", msg, tc.want)
				}
			}()
			tc.copy()
		})
	}
	type values struct {
		n    int
		When time.Time
		Arr  [2]*int
	}
	one := 1
	v := values{n: 7, When: t0, Arr: [2]*int{&one, nil}}
	c := deepCopy(v)
	if c.n != 7 || !c.When.Equal(t0) || c.Arr[0] == &one || *c.Arr[0] != 1 || c.Arr[1] != nil {
		t.Errorf("copy %+v of %+v", c, v)
	}
}

// cloneRecordJSON is the copy cloneRecord replaced, kept to compare.
func cloneRecordJSON(r *events.TenantRecord) *events.TenantRecord {
	var c events.TenantRecord
	if err := json.Unmarshal(mustJSON(r), &c); err != nil {
		panic(err)
	}
	return &c
}

// benchRecord is a record in the middle of a provisioning saga: four stores
// provisioned, their commands, audit events and the seal in the outbox.
func benchRecord(b *testing.B) *events.TenantRecord {
	rec, _ := Step(policy, nil, provisionReq(10, saga1), t0)
	for i, store := range events.Stores() {
		next, _ := Step(policy, rec, result(store, 1, saga1, events.OutcomeProvisioned, 0, 1, uint64(101+i)), t0.Add(time.Second))
		if next == nil {
			b.Fatalf("%s result changed nothing", store)
		}
		rec = next
	}
	return rec
}

func BenchmarkCloneRecord(b *testing.B) {
	rec := benchRecord(b)
	b.Logf("saga record: %d bytes of JSON, %d effects", len(mustJSON(rec)), len(rec.Outbox))
	for _, bc := range []struct {
		name  string
		clone func(*events.TenantRecord) *events.TenantRecord
	}{{"json", cloneRecordJSON}, {"reflect", cloneRecord}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.clone(rec)
			}
		})
	}
}
