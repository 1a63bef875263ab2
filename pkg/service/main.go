package service

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Main is every service's main: `<service> healthcheck` runs the container
// health check (see Healthcheck); otherwise run is called with a context
// cancelled by SIGTERM or SIGINT, and a returned error is printed and exits
// the process with status 1.
func Main(name string, run func(ctx context.Context) error) {
	if len(os.Args) == 2 && os.Args[1] == "healthcheck" {
		os.Exit(Healthcheck(name, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
