package auditlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Page sizes for List.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// Filter selects audit records for List. Zero fields do not filter.
type Filter struct {
	TenantID string
	Type     events.AuditType
	// Since and Until bound occurred_at: Since <= occurred_at < Until.
	Since, Until time.Time
	// Before is the keyset cursor: only records with seq < Before. Zero
	// starts at the newest record; pass Page.Next for the following page.
	Before int64
	// Limit is the page size: DefaultPageSize when zero, at most
	// MaxPageSize.
	Limit int
}

// Page is one page of List, newest first.
type Page struct {
	Records []Record
	// Next is the cursor for the following (older) page, to pass as
	// Filter.Before; zero when this is the last page.
	Next int64
}

// List returns the records matching f, newest first (by seq, which is the
// order they were recorded in), one page at a time. Pages are keyset
// paginated on seq, so rows appended between calls never shift a page.
func List(ctx context.Context, db Querier, f Filter) (Page, error) {
	sql, args, limit, err := f.query()
	if err != nil {
		return Page{}, err
	}
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return Page{}, fmt.Errorf("list audit events: %w", err)
	}
	defer rows.Close()
	var p Page
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return Page{}, err
		}
		p.Records = append(p.Records, r)
	}
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("list audit events: %w", err)
	}
	if len(p.Records) > limit {
		p.Records = p.Records[:limit]
		p.Next = p.Records[limit-1].Seq
	}
	return p, nil
}

// query builds List's statement; it fetches one row more than the page to
// know whether another page follows.
func (f Filter) query() (string, []any, int, error) {
	limit := f.Limit
	switch {
	case limit == 0:
		limit = DefaultPageSize
	case limit < 0 || limit > MaxPageSize:
		return "", nil, 0, fmt.Errorf("list audit events: limit %d outside 1–%d", limit, MaxPageSize)
	}
	if f.Before < 0 {
		return "", nil, 0, errors.New("list audit events: negative cursor")
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return "", nil, 0, fmt.Errorf("list audit events: since %s is not before until %s", f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339))
	}
	var where []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.TenantID != "" {
		add("tenant_id = ?", f.TenantID)
	}
	if f.Type != "" {
		add("type = ?", string(f.Type))
	}
	if !f.Since.IsZero() {
		add("occurred_at >= ?", f.Since)
	}
	if !f.Until.IsZero() {
		add("occurred_at < ?", f.Until)
	}
	if f.Before > 0 {
		add("seq < ?", f.Before)
	}
	sql := `SELECT ` + recordColumns + ` FROM ` + Table
	if len(where) > 0 {
		sql += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, limit+1)
	sql += ` ORDER BY seq DESC LIMIT $` + strconv.Itoa(len(args))
	return sql, args, limit, nil
}

// Head returns the newest record's seq and hash; seq 0 and GenesisHash
// when the log is empty.
func Head(ctx context.Context, db Querier) (int64, []byte, error) {
	var seq int64
	hash := GenesisHash()
	rows, err := db.Query(ctx, `SELECT seq, hash FROM `+Table+` ORDER BY seq DESC LIMIT 1`)
	if err != nil {
		return 0, nil, fmt.Errorf("read chain head: %w", err)
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(&seq, &hash); err != nil {
			return 0, nil, fmt.Errorf("read chain head: %w", err)
		}
	}
	return seq, hash, rows.Err()
}
