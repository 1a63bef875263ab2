package testkit

import (
	"net"
	"sync"
	"testing"
)

var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and has
// not been returned before by this test binary, so helpers started by the
// same binary never collide with each other. Another process may still take
// it before the caller binds it; the window is a few milliseconds.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testkit: find a free port on 127.0.0.1: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		handedOutMu.Lock()
		fresh := !handedOut[port]
		handedOut[port] = true
		handedOutMu.Unlock()
		if fresh {
			return port
		}
	}
	t.Fatal("testkit: no fresh free port on 127.0.0.1 after 100 tries")
	return 0
}
