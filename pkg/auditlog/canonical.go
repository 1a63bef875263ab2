package auditlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// CanonicalVersion is the value of the "v" member of every canonical event
// this package writes. A future change of the canonical form gets a new
// version, so rows hashed under the old one still verify.
const CanonicalVersion = 1

// HashSize is the size of prev_hash and hash in bytes (SHA-256).
const HashSize = sha256.Size

// maxExactInteger is 2^53-1, the largest integer an IEEE-754 double (and so
// a canonical JSON number) holds exactly.
const maxExactInteger = 1<<53 - 1

// GenesisHash is the prev_hash of the first row (seq 1): 32 zero bytes.
func GenesisHash() []byte { return make([]byte, HashSize) }

// ChainHash is sha256(prev ‖ canonical): the hash of a row whose predecessor
// has hash prev (GenesisHash for seq 1).
func ChainHash(prev, canonical []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(canonical)
	return h.Sum(nil)
}

// Entry is an audit event made ready for the chain: its fields as they are
// stored (occurred_at at PostgreSQL's microsecond precision, details in
// canonical form) and its canonical text. Build one with Prepare.
type Entry struct {
	Event     events.AuditEvent // as stored: OccurredAt truncated to µs, Details canonical
	Canonical []byte            // the canonical event, hashed into the chain
}

// Prepare checks that e can be stored faithfully and returns it with its
// canonical form. e must already have passed events.Validate (which
// events.DecodeAuditEvent does); Prepare adds what the database needs. An
// error matches ErrUnstorable and means the event can never be stored.
func Prepare(e *events.AuditEvent) (*Entry, error) {
	ev := *e
	ev.OccurredAt = e.OccurredAt.UTC().Truncate(time.Microsecond)
	c, details, err := canonical(&ev)
	if err != nil {
		return nil, err
	}
	ev.Details = details
	return &Entry{Event: ev, Canonical: c}, nil
}

// Canonical returns the canonical form of e, the bytes the chain hashes.
//
// The canonical event is the RFC 8785 (JSON Canonicalization Scheme)
// serialisation of one JSON object with exactly these members, every one
// always present:
//
//	actor        string
//	details      object  ({} when the event has none), itself canonical
//	event_id     string
//	generation   number  (0 when absent; at most 2^53-1)
//	occurred_at  string  UTC, RFC 3339 with fractional seconds truncated to
//	                     microseconds and trailing zeros dropped
//	                     (Go's time.RFC3339Nano), e.g. "2025-01-02T03:04:05.12Z"
//	saga_id      string  ("" when absent)
//	source       string
//	store        string  ("" when absent)
//	tenant_id    string  ("" when absent)
//	type         string
//	v            number  CanonicalVersion
//
// RFC 8785 in short: members sorted by their names' UTF-16 code units, no
// whitespace, strings as UTF-8 escaping only '"', '\' and control
// characters (\b \t \n \f \r, others \u00xx), numbers in the shortest
// ECMAScript form (1, 0.5, 1e+21, -0 as 0). Details numbers pass through an
// IEEE-754 double, so 1.0, 1 and 1e0 are one number; duplicate member
// names keep the last value, as PostgreSQL's jsonb does.
//
// The form is reproducible from the stored columns, which Verify checks.
// Canonical does not truncate OccurredAt; Prepare does, before calling it.
func Canonical(e *events.AuditEvent) ([]byte, error) {
	c, _, err := canonical(e)
	return c, err
}

// canonical returns the canonical event and its canonical details.
func canonical(e *events.AuditEvent) (canon, details []byte, err error) {
	strs := []struct{ field, value string }{
		{"event_id", e.EventID}, {"type", string(e.Type)}, {"tenant_id", e.TenantID},
		{"saga_id", e.SagaID}, {"store", string(e.Store)}, {"actor", e.Actor}, {"source", e.Source},
	}
	for _, s := range strs {
		if err := storableString(s.value); err != nil {
			return nil, nil, unstorable(s.field, err.Error())
		}
	}
	if e.Generation > maxExactInteger {
		return nil, nil, unstorable("generation", fmt.Sprintf("%d exceeds 2^53-1", e.Generation))
	}
	if e.OccurredAt.IsZero() {
		return nil, nil, unstorable("occurred_at", "required")
	}
	details = []byte("{}")
	if len(bytes.TrimSpace(e.Details)) > 0 && !bytes.Equal(bytes.TrimSpace(e.Details), []byte("null")) {
		details, err = CanonicalJSON(e.Details)
		if err != nil {
			return nil, nil, unstorable("details", err.Error())
		}
		if details[0] != '{' {
			return nil, nil, unstorable("details", "not a JSON object")
		}
	}
	var b bytes.Buffer
	b.Grow(256 + len(details))
	// Members in RFC 8785 order (all names are ASCII, so byte order is
	// UTF-16 order).
	b.WriteString(`{"actor":`)
	writeString(&b, e.Actor)
	b.WriteString(`,"details":`)
	b.Write(details)
	b.WriteString(`,"event_id":`)
	writeString(&b, e.EventID)
	b.WriteString(`,"generation":`)
	b.WriteString(strconv.FormatUint(e.Generation, 10))
	b.WriteString(`,"occurred_at":`)
	writeString(&b, e.OccurredAt.UTC().Format(time.RFC3339Nano))
	b.WriteString(`,"saga_id":`)
	writeString(&b, e.SagaID)
	b.WriteString(`,"source":`)
	writeString(&b, e.Source)
	b.WriteString(`,"store":`)
	writeString(&b, string(e.Store))
	b.WriteString(`,"tenant_id":`)
	writeString(&b, e.TenantID)
	b.WriteString(`,"type":`)
	writeString(&b, string(e.Type))
	b.WriteString(`,"v":`)
	b.WriteString(strconv.Itoa(CanonicalVersion))
	b.WriteByte('}')
	return b.Bytes(), details, nil
}

// storableString rejects what PostgreSQL text and jsonb cannot hold.
func storableString(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if bytes.IndexByte([]byte(s), 0) >= 0 {
		return errors.New("contains NUL, which PostgreSQL cannot store")
	}
	return nil
}

// CanonicalJSON returns the RFC 8785 canonical form of one JSON value (see
// Canonical for the rules). It fails on invalid JSON, trailing data,
// numbers outside the double range, invalid UTF-8 and NUL characters.
func CanonicalJSON(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("invalid JSON: data after the value")
	}
	if !utf8.Valid(data) {
		// encoding/json silently replaces invalid UTF-8 with U+FFFD.
		return nil, errors.New("not valid UTF-8")
	}
	var b bytes.Buffer
	if err := writeValue(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeValue(b *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return fmt.Errorf("number %s does not fit an IEEE-754 double", v)
		}
		b.Write(formatNumber(f))
	case string:
		if bytes.IndexByte([]byte(v), 0) >= 0 {
			return errors.New("string contains NUL, which PostgreSQL cannot store")
		}
		writeString(b, v)
	case []any:
		b.WriteByte('[')
		for i, x := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeValue(b, x); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			if bytes.IndexByte([]byte(k), 0) >= 0 {
				return errors.New("member name contains NUL, which PostgreSQL cannot store")
			}
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, k)
			b.WriteByte(':')
			if err := writeValue(b, v[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	default:
		return fmt.Errorf("unexpected JSON value %T", v)
	}
	return nil
}

// formatNumber is ECMAScript's Number::toString, as RFC 8785 §3.2.2.3
// requires (the same rule encoding/json follows for float64).
func formatNumber(f float64) []byte {
	if f == 0 {
		return []byte("0") // also -0
	}
	format := byte('f')
	if abs := math.Abs(f); abs < 1e-6 || abs >= 1e21 {
		format = 'e'
	}
	b := strconv.AppendFloat(nil, f, format, -1, 64)
	if format == 'e' {
		// 1e-07 → 1e-7, 1e+07 → 1e+7
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// writeString writes s as an RFC 8785 JSON string.
func writeString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\f':
			b.WriteString(`\f`)
		case c == '\r':
			b.WriteString(`\r`)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// compareUTF16 orders strings by their UTF-16 code units (RFC 8785 §3.2.3).
func compareUTF16(a, b string) int {
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}
