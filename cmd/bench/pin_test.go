package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// pinTree moves a process and the children it already has; what they fork
// later inherits it.
func TestPinTreeMovesAProcessAndItsChildren(t *testing.T) {
	if runtime.NumCPU() < 2 {
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
	pgSet, _ := cpuSets([]int{1})
	if err := pinTree(cmd.Process.Pid, &pgSet); err != nil {
		t.Fatal(err)
	}
	for _, pid := range append(children, cmd.Process.Pid) {
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(pid, &got); err != nil {
			t.Fatal(err)
		}
		if got != pgSet {
			t.Errorf("process %d: affinity %v, want CPU 1 only", pid, got)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	if got, err := parseCPUs("1"); err != nil || len(got) != 1 || got[0] != 1 {
		t.Errorf(`parseCPUs("1") = %v, %v`, got, err)
	}
	for _, bad := range []string{"", "x", "-1", "1,,2"} {
		if _, err := parseCPUs(bad); err == nil {
			t.Errorf("parseCPUs(%q): no error", bad)
		}
	}
}
