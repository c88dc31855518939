package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrStillRunning is returned by Process.Wait when the process has not exited in time.
var ErrStillRunning = errors.New("process still running")

// Process is a binary running as a separate OS process, with its stdout and
// stderr captured together.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{} // closed once the process has exited and err is set
	err  error
}

// StartProcess starts path with args. The environment is the test's own plus
// env ("KEY=value"; later entries win). The process is killed when the test
// ends if it is still running, and its output is logged if the test failed.
func StartProcess(tb testing.TB, path string, env []string, args ...string) *Process {
	tb.Helper()
	p := &Process{
		name: filepath.Base(path),
		cmd:  exec.Command(path, args...),
		out:  &SyncBuffer{},
		done: make(chan struct{}),
	}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	// Do not let a grandchild holding the output pipe block Wait forever.
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("%s (pid %d) output:\n%s", p.name, p.cmd.Process.Pid, p.Output())
		}
	})
	return p
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Signal sends sig (for example syscall.SIGTERM) to the process.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	return nil
}

// Kill sends SIGKILL: the process gets no chance to clean up.
func (p *Process) Kill() error { return p.Signal(syscall.SIGKILL) }

// Wait waits at most timeout for the process to exit. It returns nil for exit
// status 0, an *exec.ExitError for any other exit (including death by signal),
// and ErrStillRunning if the process is still running.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("wait for %s after %s: %w", p.name, timeout, ErrStillRunning)
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitCode returns the exit status, or -1 if the process is still running or
// was ended by a signal.
func (p *Process) ExitCode() int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// Output returns everything the process has written to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers (a
// process's output, a logger shared by goroutines).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
