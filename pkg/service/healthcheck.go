package service

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// Healthcheck is the `<service> healthcheck` subcommand for container health
// checks in images without curl: it asks the running service's /readyz on
// HTTP_ADDR (or the service's default) and returns the exit code (0 ready,
// 1 not).
func Healthcheck(name string, stderr io.Writer) int {
	addr := os.Getenv("HTTP_ADDR")
	if addr == "" {
		addr = Defaults(name).HTTPAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: HTTP_ADDR %q: %v\n", addr, err)
		return 1
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/readyz")
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: %s not ready: %s", name, body)
		return 1
	}
	return 0
}
