package testkit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestPostgresSCRAMOnly(t *testing.T) {
	p := StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conn, err := pgx.Connect(ctx, p.AdminURL())
	if err != nil {
		t.Fatalf("admin login: %v", err)
	}
	defer conn.Close(ctx)

	var who string
	var super bool
	if err := conn.QueryRow(ctx, "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&who, &super); err != nil {
		t.Fatalf("query as admin: %v", err)
	}
	if who != p.AdminUser || !super {
		t.Fatalf("current_user = %q (superuser %v), want superuser %q", who, super, p.AdminUser)
	}

	var enc string
	if err := conn.QueryRow(ctx, "SHOW password_encryption").Scan(&enc); err != nil {
		t.Fatal(err)
	}
	if enc != "scram-sha-256" {
		t.Fatalf("password_encryption = %q, want scram-sha-256", enc)
	}

	var stored string
	if err := conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", p.AdminUser).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$") {
		t.Fatalf("admin password stored as %.14q..., want a SCRAM-SHA-256 verifier", stored)
	}

	rows, err := conn.Query(ctx, "SELECT type, auth_method, coalesce(error, '') FROM pg_hba_file_rules")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var typ, method, hbaErr string
		if err := rows.Scan(&typ, &method, &hbaErr); err != nil {
			t.Fatal(err)
		}
		n++
		if method != "scram-sha-256" || hbaErr != "" {
			t.Errorf("pg_hba rule %s uses %q (error %q), want scram-sha-256 only", typ, method, hbaErr)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("pg_hba_file_rules is empty")
	}

	_, err = pgx.Connect(ctx, p.URL(p.AdminUser, "wrong-"+p.AdminPassword, "postgres"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("login with a wrong password: err = %v, want SQLSTATE 28P01 (invalid_password)", err)
	}
}

func TestPostgresStopStart(t *testing.T) {
	p := StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	exec := func(sql string) error {
		conn, err := pgx.Connect(ctx, p.AdminURL())
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE TABLE kit (v text); INSERT INTO kit VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}

	p.Stop(t)
	if err := exec("SELECT 1"); err == nil {
		t.Fatal("query succeeded while postgres was stopped")
	}

	p.Start(t)
	conn, err := pgx.Connect(ctx, p.AdminURL())
	if err != nil {
		t.Fatalf("login after Start: %v", err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kit").Scan(&v); err != nil || v != "kept" {
		t.Fatalf("row after restart = %q, %v; want \"kept\"", v, err)
	}
}
