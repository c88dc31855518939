package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a relay or sink running as a child process, its output going to
// a log file.
type proc struct {
	name      string
	logPath   string
	addr      string // HTTP_ADDR (/readyz, /metrics)
	pprofAddr string // with --profile
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited; err is set then
	err       error
}

// start starts bin with env added to a minimal environment. Every process
// gets an HTTP_ADDR; with --profile also a pprof listener.
func (b *bench) start(ctx context.Context, name, bin string, env []string, args ...string) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.nproc++
	n := b.nproc
	b.mu.Unlock()
	p := &proc{name: fmt.Sprintf("%s#%d", name, n), addr: addr, done: make(chan struct{}),
		logPath: filepath.Join(b.dir, "logs", fmt.Sprintf("%02d-%s.log", n, name))}
	env = append(env, "HTTP_ADDR="+addr, "LOG_FORMAT=json", "LOG_LEVEL=info")
	if b.opts.Profile != "" {
		if p.pprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		env = append(env, "JSB_BENCH_PPROF_ADDR="+p.pprofAddr)
	}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(baseEnviron(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	// Own process group: Ctrl-C reaches the bench only, which stops its
	// children itself; a bench killed with -9 takes them along.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(p.cmd.SysProcAttr)
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p, nil
}

// baseEnviron is the inherited environment without the bridge's variables,
// so that a developer's shell settings do not change what is measured.
func baseEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "HOME", "TMPDIR", "LANG", "TZ", "GODEBUG", "GOMAXPROCS", "GOGC", "GOMEMLIMIT":
			env = append(env, kv)
		}
	}
	return env
}

// relayEnv is the relay's configuration in every step.
func (b *bench) relayEnv() []string {
	return append([]string{
		"DATABASE_URL=" + b.srcURL,
		"NATS_URLS=" + b.natsURL,
		"APP_NAME=" + appSrc,
		"DESTINATION_APP=" + appDst,
		"REPLICATION_SLOT=" + b.slot,
		"JETSTREAM_STREAM_NAME=" + streamName,
		"MAX_INFLIGHT=" + strconv.Itoa(b.opts.MaxInflight),
	}, b.opts.RelayEnv...)
}

// sinkEnv is the sink's configuration.
func (b *bench) sinkEnv(handler string, concurrency int) []string {
	return append([]string{
		"DATABASE_URL=" + b.dstURL,
		"NATS_URLS=" + b.natsURL,
		"APP_NAME=" + appDst,
		"DESTINATION_APP=" + appSrc,
		"JETSTREAM_STREAM_NAME=" + streamName,
		"HANDLER=" + handler,
		"CONCURRENCY=" + strconv.Itoa(concurrency),
	}, b.opts.SinkEnv...)
}

// provisionRelay runs `relay provision` and waits for it.
func (b *bench) provisionRelay(ctx context.Context) error {
	p, err := b.start(ctx, "relay-provision", b.relayBin, b.relayEnv(), "provision")
	if err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = p.stop(5 * time.Second)
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		_ = p.stop(5 * time.Second)
		return errors.New("relay provision did not finish within 2 minutes")
	}
	if p.err != nil {
		return fmt.Errorf("relay provision: %w\n%s", p.err, p.tail(20))
	}
	return nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits up to timeout, then kills. It returns an error
// when the process did not exit cleanly.
func (p *proc) stop(timeout time.Duration) error {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(timeout):
			_ = p.cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, timeout)
		}
	}
	if p.err != nil {
		return fmt.Errorf("%s: %w\n%s", p.name, p.err, p.tail(20))
	}
	return nil
}

// tail returns the last n lines of the process log.
func (p *proc) tail(n int) string {
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

// waitReady polls /readyz until it answers 200, the process exits, or
// timeout passes.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	last := "no answer yet"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/readyz", nil)
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
		case <-p.done:
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail(20))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s (%s)\n%s", p.name, timeout, last, p.tail(20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// metrics fetches /metrics.
func (p *proc) metrics(ctx context.Context) (promText, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s metrics: %w", p.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s metrics: %w", p.name, err)
	}
	return parseProm(string(b)), nil
}

// peakRSS returns VmHWM, the process's peak resident set, in bytes.
func (p *proc) peakRSS() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
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
