package localenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Child is a bridge binary (relay, sink) running as a child process of the
// demo or the benchmark, its output going to a log file. It runs in its own
// process group, so Ctrl-C reaches the parent only, which stops its children
// itself; on Linux a parent killed with -9 takes them along.
type Child struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited; err is set then
	err     error
}

// StartChild starts bin with args and exactly env, appending its output to logPath.
func StartChild(name, logPath string, env []string, bin string, args ...string) (*Child, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	return c, nil
}

// Done is closed when the process has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exited reports whether the process has ended.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil for status 0); meaningful once Exited.
func (c *Child) Err() error {
	if !c.Exited() {
		return nil
	}
	return c.err
}

// PID is the process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Stop sends SIGTERM and waits up to timeout, then kills. It returns an error
// when the process did not exit cleanly with status 0.
func (c *Child) Stop(timeout time.Duration) error {
	if !c.Exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(timeout):
			_ = c.cmd.Process.Kill()
			<-c.done
			return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", c.Name, timeout)
		}
	}
	if c.err != nil {
		return fmt.Errorf("%s: %w", c.Name, c.err)
	}
	return nil
}

// Tail returns the last n lines of the process log.
func (c *Child) Tail(n int) string {
	b, err := os.ReadFile(c.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", c.LogPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitReady polls http://addr/readyz until it answers 200, the process
// exits, or timeout passes.
func (c *Child) WaitReady(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	last := "no answer yet"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before it was ready: %v\n%s", c.Name, c.err, c.Tail(15))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s (last /readyz: %s)\n%s", c.Name, timeout, last, c.Tail(15))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// FreeAddr returns a free 127.0.0.1 port as host:port.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
