package pgstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// ident quotes a PostgreSQL identifier with pgx's sanitizer. It is the only
// way a name enters SQL text in this package: tenant names keep their
// hyphens ("tenant_acme-eu"), so quoting is required, not optional.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// quoteLiteral returns s as a PostgreSQL string literal for the utility
// statements that take no bind parameters (COMMENT ON … IS, PASSWORD). It
// doubles single quotes; if s has a backslash it uses the E” form and
// doubles backslashes too, so the result means s whatever
// standard_conforming_strings is (libpq's PQescapeLiteral does the same).
// NUL bytes and invalid UTF-8 cannot be represented and are refused.
func quoteLiteral(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", errors.New("literal contains a NUL byte")
	}
	if !utf8.ValidString(s) {
		return "", errors.New("literal is not valid UTF-8")
	}
	q := strings.ReplaceAll(s, "'", "''")
	if strings.Contains(q, `\`) {
		return "E'" + strings.ReplaceAll(q, `\`, `\\`) + "'", nil
	}
	return "'" + q + "'", nil
}

// ManagedBy is the managed_by value of every marker tenantprov writes.
const ManagedBy = "tenantprov"

// Marker is the JSON that tenantprov writes as the COMMENT of its canary
// database, for people reading \l+. It is a label, not a proof of origin:
// ownership of tenant roles and databases is the system record
// (recordTable), which no tenant can write; tenantprov trusts no comment.
type Marker struct {
	ManagedBy string `json:"managed_by"`
	// Purpose says what the resource is for ("canary").
	Purpose string `json:"purpose,omitempty"`
}

// literal renders m as a quoted SQL literal.
func (m Marker) literal() (string, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("marker: %w", err)
	}
	return quoteLiteral(string(b))
}

// HBALine renders the pg_hba.conf line that admits a tenant: TLS only,
// SCRAM only, its own database and role only (DESIGN.md §5). A name that is
// not plain (lower-case letters, digits, "_", "-") or is one of pg_hba's
// keywords is double-quoted; tenant names never need it.
func HBALine(database, role, cidr string) string {
	return fmt.Sprintf("hostssl %s %s %s scram-sha-256", hbaQuote(database), hbaQuote(role), cidr)
}

func hbaQuote(name string) string {
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return `"` + name + `"`
		}
	}
	switch name {
	case "all", "sameuser", "samerole", "samegroup", "replication":
		return `"` + name + `"`
	}
	return name
}
