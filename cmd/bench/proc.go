package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// proc is a relay or sink running as a child process, its output going to
// a log file.
type proc struct {
	*localenv.Child
	name      string
	logPath   string
	addr      string // HTTP_ADDR (/readyz, /metrics)
	pprofAddr string // with --profile
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
	p := &proc{name: fmt.Sprintf("%s#%d", name, n), addr: addr,
		logPath: filepath.Join(localenv.LogDir(b.dir), fmt.Sprintf("%02d-%s.log", n, name))}
	env = append(env, "HTTP_ADDR="+addr, "LOG_FORMAT=json", "LOG_LEVEL=info")
	if b.opts.Profile != "" {
		if p.pprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		env = append(env, "JSB_BENCH_PPROF_ADDR="+p.pprofAddr)
	}
	if p.Child, err = localenv.StartChild(p.name, p.logPath, append(baseEnviron(), env...), bin, args...); err != nil {
		return nil, err
	}
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

// freshRelay empties the outbox and the stream and runs `relay provision`,
// waiting for it: a new slot with nothing behind it and nothing in the
// stream, where every relay measurement starts.
func (b *bench) freshRelay(ctx context.Context) error {
	if err := b.resetSource(ctx); err != nil {
		return err
	}
	if err := b.resetStream(ctx, false); err != nil {
		return err
	}
	p, err := b.start(ctx, "relay-provision", b.relayBin, b.relayEnv(), "provision")
	if err != nil {
		return err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		_ = p.stop(5 * time.Second)
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		_ = p.stop(5 * time.Second)
		return errors.New("relay provision did not finish within 2 minutes")
	}
	if p.Err() != nil {
		return fmt.Errorf("relay provision: %w\n%s", p.Err(), p.tail(20))
	}
	return nil
}

func (p *proc) exited() bool { return p.Exited() }
func (p *proc) pid() int     { return p.PID() }

// stop sends SIGTERM and waits up to timeout, then kills; an unclean exit
// comes with the end of the log.
func (p *proc) stop(timeout time.Duration) error {
	if err := p.Stop(timeout); err != nil {
		return fmt.Errorf("%w\n%s", err, p.Tail(20))
	}
	return nil
}

func (p *proc) tail(n int) string { return p.Tail(n) }

func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	return p.WaitReady(ctx, p.addr, timeout)
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

func freeAddr() (string, error) { return localenv.FreeAddr() }
