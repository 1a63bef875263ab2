package qdrantstandin

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/protobuf/proto"
)

// pointKey is a point id in comparable form. Qdrant orders numeric ids
// before UUIDs, numbers ascending, UUIDs by their 128-bit value.
type pointKey struct {
	isUUID bool
	num    uint64
	uuid   [16]byte
}

func (k pointKey) compare(o pointKey) int {
	switch {
	case k.isUUID != o.isUUID:
		if k.isUUID {
			return 1
		}
		return -1
	case k.isUUID:
		return bytes.Compare(k.uuid[:], o.uuid[:])
	case k.num < o.num:
		return -1
	case k.num > o.num:
		return 1
	}
	return 0
}

func (k pointKey) proto() *qdrant.PointId {
	if !k.isUUID {
		return qdrant.NewIDNum(k.num)
	}
	return qdrant.NewIDUUID(formatUUID(k.uuid))
}

func (k pointKey) String() string {
	if k.isUUID {
		return formatUUID(k.uuid)
	}
	return fmt.Sprint(k.num)
}

func parsePointID(id *qdrant.PointId) (pointKey, error) {
	switch v := id.GetPointIdOptions().(type) {
	case *qdrant.PointId_Num:
		return pointKey{num: v.Num}, nil
	case *qdrant.PointId_Uuid:
		u, err := parseUUID(v.Uuid)
		if err != nil {
			return pointKey{}, status400("Unable to parse UUID: %s", v.Uuid)
		}
		return pointKey{isUUID: true, uuid: u}, nil
	}
	return pointKey{}, status400("Empty ID is not allowed")
}

func status400(format string, args ...any) error { return errBadInput(format, args...) }

// parseUUID accepts the forms Rust's uuid::Uuid::parse_str does: simple
// (32 hex digits), hyphenated, braced and urn:uuid:.
func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	switch {
	case strings.HasPrefix(s, "urn:uuid:"):
		s = s[len("urn:uuid:"):]
	case len(s) == 38 && s[0] == '{' && s[37] == '}':
		s = s[1:37]
	}
	switch len(s) {
	case 32:
	case 36:
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return u, fmt.Errorf("invalid uuid %q", s)
		}
		s = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	default:
		return u, fmt.Errorf("invalid uuid length %d", len(s))
	}
	if _, err := hex.Decode(u[:], []byte(s)); err != nil {
		return u, err
	}
	return u, nil
}

func formatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// point is one stored point; a stored point is never mutated, an update
// replaces it, so readers may hold it after the lock is released.
type point struct {
	id      pointKey
	vector  []float32
	payload map[string]*qdrant.Value
	version uint64
}

// collection is one collection: a single unnamed dense vector.
type collection struct {
	name     string
	size     int
	distance qdrant.Distance
	datatype *qdrant.Datatype
	onDisk   *bool
	metadata map[string]*qdrant.Value
	points   map[pointKey]*point
	// keywords indexes the points' keyword values (index.go).
	keywords keywordIndex
	// strict is the strict-mode configuration (strict.go); nil: none.
	strict *qdrant.StrictModeConfig
}

// sortedPoints returns the points in id order.
func (c *collection) sortedPoints() []*point {
	out := make([]*point, 0, len(c.points))
	for _, p := range c.points {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *point) int { return a.id.compare(b.id) })
	return out
}

// prepare checks a vector's dimension and returns the form stored and
// compared: a copy, normalised for Cosine as Qdrant does on write.
func (c *collection) prepare(v []float32) ([]float32, error) {
	if len(v) != c.size {
		return nil, errDimension(c.size, len(v))
	}
	out := slices.Clone(v)
	if c.distance == qdrant.Distance_Cosine {
		var sum float32
		for _, x := range out {
			sum += x * x
		}
		if n := float32(math.Sqrt(float64(sum))); n >= float32Epsilon {
			for i := range out {
				out[i] /= n
			}
		}
	}
	return out, nil
}

// float32Epsilon is Rust's f32::EPSILON, below which Qdrant leaves a vector
// unnormalised.
const float32Epsilon = 1.1920929e-07

// score is the similarity Qdrant reports for the collection's distance.
func (c *collection) score(a, b []float32) float32 {
	var s float32
	switch c.distance {
	case qdrant.Distance_Euclid:
		for i := range a {
			d := a[i] - b[i]
			s += d * d
		}
		return float32(math.Sqrt(float64(s)))
	case qdrant.Distance_Manhattan:
		for i := range a {
			s += float32(math.Abs(float64(a[i] - b[i])))
		}
		return s
	default: // Cosine (vectors normalised) and Dot
		for i := range a {
			s += a[i] * b[i]
		}
		return s
	}
}

// better reports whether score x ranks before y.
func (c *collection) better(x, y float32) bool {
	if c.distance == qdrant.Distance_Euclid || c.distance == qdrant.Distance_Manhattan {
		return x < y
	}
	return x > y
}

// passes reports whether a score meets score_threshold.
func (c *collection) passes(score float32, threshold *float32) bool {
	if threshold == nil {
		return true
	}
	if c.distance == qdrant.Distance_Euclid || c.distance == qdrant.Distance_Manhattan {
		return score <= *threshold
	}
	return score >= *threshold
}

func (c *collection) vectorParams() *qdrant.VectorParams {
	return &qdrant.VectorParams{
		Size:     uint64(c.size),
		Distance: c.distance,
		Datatype: c.datatype,
		OnDisk:   c.onDisk,
	}
}

// denseVector extracts the single unnamed dense vector of a point.
func denseVector(v *qdrant.Vectors) ([]float32, error) {
	switch o := v.GetVectorsOptions().(type) {
	case *qdrant.Vectors_Vector:
		return denseFromVector(o.Vector)
	case *qdrant.Vectors_Vectors:
		named := o.Vectors.GetVectors()
		for name, vec := range named {
			if name != "" {
				return nil, errBadInput("Not existing vector name error: %s", name)
			}
			return denseFromVector(vec)
		}
	}
	return nil, errBadInput("Vector with name `` is required")
}

func denseFromVector(v *qdrant.Vector) ([]float32, error) {
	switch o := v.GetVector().(type) {
	case *qdrant.Vector_Dense:
		return o.Dense.GetData(), nil
	case nil:
		// The deprecated flat encoding: data alone is dense.
		if v == nil {
			return nil, errBadInput("Vector with name `` is required")
		}
		//lint:ignore SA1019 clients still send the deprecated flat encoding; the stand-in must accept what Qdrant accepts
		if v.GetIndices() != nil {
			return nil, errUnsupported("sparse vectors")
		}
		//lint:ignore SA1019 as above
		if v.VectorsCount != nil {
			return nil, errUnsupported("multi-vectors")
		}
		//lint:ignore SA1019 as above
		return v.GetData(), nil
	default:
		return nil, errUnsupported("vector input of type %T (only dense vectors)", o)
	}
}

func vectorsOutput(v []float32) *qdrant.VectorsOutput {
	return &qdrant.VectorsOutput{VectorsOptions: &qdrant.VectorsOutput_Vector{
		Vector: &qdrant.VectorOutput{Vector: &qdrant.VectorOutput_Dense{Dense: &qdrant.DenseVector{Data: slices.Clone(v)}}},
	}}
}

// wantVectors applies a with_vectors selector (default: none).
func wantVectors(sel *qdrant.WithVectorsSelector) bool {
	switch o := sel.GetSelectorOptions().(type) {
	case *qdrant.WithVectorsSelector_Enable:
		return o.Enable
	case *qdrant.WithVectorsSelector_Include:
		return slices.Contains(o.Include.GetNames(), "")
	}
	return false
}

// selectPayload applies a with_payload selector; def is the method's
// default when the selector is absent (true for Get/Scroll, false for
// Query/Search, as in Qdrant).
func selectPayload(p map[string]*qdrant.Value, sel *qdrant.WithPayloadSelector, def bool) map[string]*qdrant.Value {
	switch o := sel.GetSelectorOptions().(type) {
	case *qdrant.WithPayloadSelector_Enable:
		def = o.Enable
	case *qdrant.WithPayloadSelector_Include:
		out := map[string]*qdrant.Value{}
		for _, f := range o.Include.GetFields() {
			copyPath(out, p, splitPath(f))
		}
		return out
	case *qdrant.WithPayloadSelector_Exclude:
		out := clonePayload(p)
		for _, f := range o.Exclude.GetFields() {
			deletePath(out, splitPath(f))
		}
		return out
	}
	if !def {
		return nil
	}
	return clonePayload(p)
}

func clonePayload(p map[string]*qdrant.Value) map[string]*qdrant.Value {
	if p == nil {
		return nil
	}
	out := make(map[string]*qdrant.Value, len(p))
	for k, v := range p {
		out[k] = proto.Clone(v).(*qdrant.Value)
	}
	return out
}

// copyPath copies the value at an object path (array markers ignored) from
// src into dst, creating the enclosing objects.
func copyPath(dst, src map[string]*qdrant.Value, path []pathSegment) {
	if len(path) == 0 {
		return
	}
	v, ok := src[path[0].key]
	if !ok {
		return
	}
	if len(path) == 1 || v.GetStructValue() == nil {
		dst[path[0].key] = proto.Clone(v).(*qdrant.Value)
		return
	}
	sub, ok := dst[path[0].key]
	if !ok || sub.GetStructValue() == nil {
		sub = qdrant.NewValueStruct(&qdrant.Struct{Fields: map[string]*qdrant.Value{}})
		dst[path[0].key] = sub
	}
	copyPath(sub.GetStructValue().Fields, v.GetStructValue().GetFields(), path[1:])
}

func deletePath(m map[string]*qdrant.Value, path []pathSegment) {
	if len(path) == 0 {
		return
	}
	if len(path) == 1 {
		delete(m, path[0].key)
		return
	}
	if s := m[path[0].key].GetStructValue(); s != nil {
		deletePath(s.Fields, path[1:])
	}
}
