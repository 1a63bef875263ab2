// Command qdrant-standin runs the Qdrant STAND-IN (package
// testkit/qdrantstandin): an in-memory server for Qdrant's gRPC API with
// Qdrant's API-key and JWT-RBAC authentication. It is NOT Qdrant, and says
// so loudly when it starts. `make up` uses it only when no real Qdrant is
// reachable; no production configuration may point at it.
//
// Configuration mirrors Qdrant's environment variables, and flags override
// them:
//
//	-listen             QDRANT_STANDIN_LISTEN               default 127.0.0.1:6334
//	-api-key            QDRANT__SERVICE__API_KEY
//	-read-only-api-key  QDRANT__SERVICE__READ_ONLY_API_KEY
//	-jwt-rbac           QDRANT__SERVICE__JWT_RBAC           default false, as in Qdrant
//	-allow-remote       QDRANT_STANDIN_ALLOW_REMOTE         permit a non-loopback listen address
//
// It stops cleanly on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/tenantprov/tenantprov/testkit/qdrantstandin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "qdrant-standin:", err)
		os.Exit(1)
	}
}

func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("qdrant-standin", flag.ContinueOnError)
	listen := fs.String("listen", envOr("QDRANT_STANDIN_LISTEN", "127.0.0.1:6334"), "gRPC listen address")
	apiKey := fs.String("api-key", os.Getenv("QDRANT__SERVICE__API_KEY"), "admin API key (also the JWT signing secret)")
	roKey := fs.String("read-only-api-key", os.Getenv("QDRANT__SERVICE__READ_ONLY_API_KEY"), "read-only API key")
	jwtRBAC := fs.Bool("jwt-rbac", envBool("QDRANT__SERVICE__JWT_RBAC"), "accept JWTs signed with the API key")
	allowRemote := fs.Bool("allow-remote", envBool("QDRANT_STANDIN_ALLOW_REMOTE"), "allow a non-loopback listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkLoopback(*listen, *allowRemote); err != nil {
		return err
	}
	if *jwtRBAC && *apiKey == "" {
		return errors.New("-jwt-rbac needs -api-key (the JWT signing secret)")
	}

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	logger := log.New(os.Stderr, "", log.LstdFlags)
	banner(logger, lis.Addr().String(), *apiKey != "" || *roKey != "", *jwtRBAC && *apiKey != "")

	srv := qdrantstandin.New(qdrantstandin.Config{
		APIKey:         *apiKey,
		ReadOnlyAPIKey: *roKey,
		JWTRBAC:        *jwtRBAC,
		Logf:           logger.Printf,
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		srv.Stop()
		return <-served
	}
}

// checkLoopback refuses a listen address reachable from other machines
// unless explicitly allowed: the stand-in is a development tool.
func checkLoopback(addr string, allow bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	if allow {
		return nil
	}
	return fmt.Errorf("refusing to listen on %q, which is not loopback: this is a test stand-in, not Qdrant (pass -allow-remote to insist)", addr)
}

func banner(l *log.Logger, addr string, auth, jwt bool) {
	for _, line := range []string{
		"************************************************************************",
		"*  QDRANT STAND-IN - this is NOT Qdrant.                               *",
		"*  An in-memory test double of Qdrant's gRPC API (tenantprov testkit). *",
		"*  Data is lost when it exits. Never use it in production.             *",
		"************************************************************************",
	} {
		l.Print(line)
	}
	l.Printf("qdrant-standin: emulating Qdrant %s gRPC on %s (no REST API); api key: %v, jwt rbac: %v",
		qdrantstandin.EmulatedVersion, addr, auth, jwt)
}
