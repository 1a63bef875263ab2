package main

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// machineBusy is the CPU time every process on the machine has used since
// boot, summed over the cores: /proc/stat's user, nice, system, irq and
// softirq (not idle, iowait, or steal: time the hypervisor gave to others). The difference over a window is
// what the window cost the machine, whoever spent it: the stores' servers,
// the agents, the orchestrator, NATS and this process.
func machineBusy() (time.Duration, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system _ _ irq softirq
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100, nil // USER_HZ
}

// cpuOf runs fn and returns the machine's CPU time it took (see
// machineBusy); zero where /proc/stat cannot be read.
func cpuOf(fn func() error) (time.Duration, error) {
	before, berr := machineBusy()
	err := fn()
	after, aerr := machineBusy()
	if berr != nil || aerr != nil {
		return 0, err
	}
	return after - before, err
}

// procCPU is one process's command name and CPU time (user + system).
type procCPU struct {
	name string
	cpu  time.Duration
}

// processCPU reads every process on the machine (/proc/<pid>/stat), by
// pid. Kernel workers, whose names change with their work item, are all
// named "kworker".
func processCPU() map[string]procCPU {
	out := map[string]procCPU{}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // it exited meanwhile
		}
		s := string(raw)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || end+2 > len(s) {
			continue
		}
		f := strings.Fields(s[end+2:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		name := s[open+1 : end]
		if strings.HasPrefix(name, "kworker/") {
			name = "kworker"
		}
		out[d.Name()] = procCPU{name: name, cpu: time.Duration(ut+st) * time.Second / 100}
	}
	return out
}

// cpuByProcess adds up, over windows, the CPU time each command spent.
// A process that exits within a window is not counted.
type cpuByProcess map[string]time.Duration

// measure runs fn and adds each command's CPU time during it.
func (c cpuByProcess) measure(fn func() error) error {
	before := processCPU()
	err := fn()
	for pid, p := range processCPU() {
		if d := p.cpu - before[pid].cpu; d > 0 {
			c[p.name] += d
		}
	}
	return err
}

// top formats the n commands that spent the most, per unit (a tenant).
func (c cpuByProcess) top(n, units int) string {
	names := slices.SortedFunc(maps.Keys(c), func(a, b string) int { return cmp.Compare(c[b], c[a]) })
	var parts []string
	for _, name := range names[:min(n, len(names))] {
		parts = append(parts, fmt.Sprintf("%s %s", name, ms(c[name]/time.Duration(max(units, 1)))))
	}
	return strings.Join(parts, ", ")
}
