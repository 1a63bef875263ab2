// Command tenantctl is the operator CLI of tenantprov: create the age keys,
// provision and deprovision tenants and watch them settle, read tenant
// records, decrypt a tenant's sealed secrets, and list and verify the audit
// trail. Run `tenantctl --help` for the tour.
//
// Exit codes: 0 success; 1 the operation failed (e.g. the tenant was rolled
// back); 2 bad usage or invalid input; 3 timed out waiting; 4 not found;
// 5 a dependency (NATS, PostgreSQL) could not be reached.
//
// Output: text for people by default; --output json (-o json) on every
// command prints JSON instead, and errors as JSON on stderr (output.go).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitTimeout     = 3
	exitNotFound    = 4
	exitUnavailable = 5
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func fail(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root, g := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if !g.json && askedForJSON(args) {
		// The error came before the flags were read (an unknown command
		// or flag): it is still reported as asked.
		g.json = true
	}
	return g.report(err)
}

// askedForJSON reports whether args ask for -o json, for errors that come
// before cobra has parsed the flags.
func askedForJSON(args []string) bool {
	for i, a := range args {
		if a == "--" {
			return false
		}
		switch a {
		case "--json", "--output=json", "-o=json", "-ojson":
			return true
		case "-o", "--output":
			if i+1 < len(args) && args[i+1] == outputJSON {
				return true
			}
		}
	}
	return false
}
