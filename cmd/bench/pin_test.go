package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// pinTree moves a process and the children it already has; what they fork
// later inherits it.
func TestPinTreeMovesAProcessAndItsChildren(t *testing.T) {
	if u := usableCPUs(); u.Count() < 2 {
		t.Skip("needs two CPUs")
	}
	cmd := exec.Command("sh", "-c", "sleep 30 & sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var children []int
	testutil.Eventually(t, 10*time.Second, func() error {
		if children = childPIDs(cmd.Process.Pid); len(children) != 2 {
			return fmt.Errorf("shell has children %v, want 2", children)
		}
		return nil
	})
	usable, last := usableCPUs(), -1
	for c := range len(usable) * 64 {
		if usable.IsSet(c) {
			last = c
		}
	}
	pgSet, _ := cpuSets([]int{last})
	if err := pinTree(cmd.Process.Pid, &pgSet); err != nil {
		t.Fatal(err)
	}
	for _, pid := range append(children, cmd.Process.Pid) {
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(pid, &got); err != nil {
			t.Fatal(err)
		}
		if got != pgSet {
			t.Errorf("process %d: affinity %v, want CPU %d only", pid, got, last)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	usable := usableCPUs()
	var all []string
	first := -1
	for c := range len(usable) * 64 {
		if usable.IsSet(c) {
			all = append(all, fmt.Sprint(c))
			if first < 0 {
				first = c
			}
		}
	}
	if len(all) >= 2 {
		if got, err := parseCPUs(all[len(all)-1]); err != nil || len(got) != 1 {
			t.Errorf("parseCPUs(%q) = %v, %v", all[len(all)-1], got, err)
		}
		if _, err := parseCPUs(strings.Join(all, ",")); err == nil || !strings.Contains(err.Error(), "leave at least one") {
			t.Errorf("every usable CPU: %v, want an error that leaves one for the rest", err)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1,,2", "4096"} {
		if _, err := parseCPUs(bad); err == nil {
			t.Errorf("parseCPUs(%q): no error", bad)
		}
	}
}
