package main

import (
	"syscall"
	"testing"
	"time"
)

// TestMachineBusyCountsCPU: burning CPU in this process shows in the
// machine's busy time at least as much as it burned (other processes can
// only add to it).
func TestMachineBusyCountsCPU(t *testing.T) {
	burn := 300 * time.Millisecond
	cpu, err := cpuOf(func() error {
		for start := selfCPU(t); selfCPU(t)-start < burn; {
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cpu < burn-20*time.Millisecond { // one tick of 10 ms at each end
		t.Fatalf("machine busy time grew %s while this process burned %s of CPU", cpu, burn)
	}
}

// selfCPU is this process's CPU time (user + system).
func selfCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
