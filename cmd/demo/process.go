package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// process is a relay or sink running as a child process, its output going to
// a log file.
type process struct {
	name    string // relay_a, sink_b, ...
	logPath string
	addr    string // HTTP_ADDR (host:port)
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited; err is set then
	err     error
}

// startProcess starts bin with env added to the inherited environment
// (minus the variables the demo controls).
func startProcess(name, bin, logPath, addr string, env []string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, "run")
	cmd.Env = append(childEnviron(), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Own process group: Ctrl-C in the terminal reaches the demo only, which
	// then stops its children in order with SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, addr: addr, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// controlled are the variables the demo sets for its children; inherited
// values of these are dropped so that the four processes match what the demo
// checks. Tuning variables (MAX_INFLIGHT, CONCURRENCY, BACKOFF, ...) and NATS
// credentials pass through.
var controlled = map[string]bool{
	"DATABASE_URL": true, "NATS_URLS": true, "APP_NAME": true, "DESTINATION_APP": true, "ENV_NAME": true,
	"AUTO_PROVISION": true, "USE_DLQ": true, "LOG_FORMAT": true, "HTTP_ADDR": true,
	"OUTBOX_TABLE": true, "REPLICATION_SLOT": true, "PUBLICATION": true, "OUTBOX_RETENTION": true,
	"INBOX_TABLE": true, "DURABLE_NAME": true, "FILTER_SUBJECT": true, "HANDLER": true, "ROUTES_FILE": true,
	"CONSUMER_MODE": true, "DATABASE_URL_A": true, "DATABASE_URL_B": true,
}

func childEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !controlled[k] && !strings.HasPrefix(k, "DEMO_") {
			env = append(env, kv)
		}
	}
	return env
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the process ended.
func (p *process) exitError() error {
	if p.err == nil {
		return fmt.Errorf("%s exited (status 0) unexpectedly", p.name)
	}
	return fmt.Errorf("%s exited unexpectedly: %w", p.name, p.err)
}

// stop sends SIGTERM and waits up to timeout, then kills. It returns an error
// when the process did not exit cleanly with status 0.
func (p *process) stop(timeout time.Duration) error {
	if p.exited() {
		return p.result()
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.result()
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, timeout)
	}
}

func (p *process) result() error {
	if p.err != nil {
		return fmt.Errorf("%s: %w", p.name, p.err)
	}
	return nil
}

// tail returns the last n lines of the process log.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitReady polls GET /readyz until it answers 200, the process exits, or
// ctx ends.
func (p *process) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + p.addr + "/readyz"
	last := "no answer yet"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			var body [512]byte
			n, _ := resp.Body.Read(body[:])
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body[:n])))
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return p.exitError()
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s not ready after %s (%s)", p.name, timeout, last)
			}
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freeAddr returns a free 127.0.0.1 port as host:port.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
