package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"
)

// With --profile the relay and the sink are built with a pprof listener
// (see pprofOverlay), the JetStream server (serve-nats) gets one too, and the
// bench saves, for one window per step, CPU profiles of the process under
// test, of the JetStream server and of the bench process itself (the load
// generator).

var benchProfileMu, natsProfileMu sync.Mutex

// profileCPU starts CPU profiles of p (nil: none), of the JetStream server
// and of the bench for d and returns a function that waits until they are
// written.
func (b *bench) profileCPU(ctx context.Context, p *proc, name string, d time.Duration) (wait func()) {
	if b.opts.Profile == "" {
		return func() {}
	}
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	var wg sync.WaitGroup
	fetch := func(p *proc, file string, done func()) {
		// The listener starts with the process: wait for it, so that the
		// profile covers the window that begins now.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if c, err := net.DialTimeout("tcp", p.pprofAddr, time.Second); err == nil {
				c.Close()
				break
			}
		}
		wg.Go(func() {
			defer done()
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.pprofAddr, secs)
			if err := fetchTo(ctx, url, filepath.Join(b.opts.Profile, file), time.Duration(secs+30)*time.Second); err != nil {
				fmt.Fprintf(b.out, "  profile %s: %v\n", file, err)
			}
		})
	}
	if p != nil && p.pprofAddr != "" {
		fetch(p, name+".cpu.pprof", func() {})
	}
	if ns := b.natsProc; ns != nil && ns.pprofAddr != "" && natsProfileMu.TryLock() { // one at a time
		fetch(ns, name+".nats.cpu.pprof", natsProfileMu.Unlock)
	}
	wg.Go(func() {
		if !benchProfileMu.TryLock() {
			return // one bench profile at a time
		}
		defer benchProfileMu.Unlock()
		f, err := os.Create(filepath.Join(b.opts.Profile, name+".bench.cpu.pprof"))
		if err != nil {
			return
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return
		}
		select {
		case <-time.After(time.Duration(secs) * time.Second):
		case <-ctx.Done():
		}
		pprof.StopCPUProfile()
	})
	return wg.Wait
}

// profileTrace saves a Go execution trace of p over d (with --profile):
// where the relay's goroutines wait, which a CPU profile cannot show.
func (b *bench) profileTrace(ctx context.Context, p *proc, name string, d time.Duration) (wait func()) {
	if b.opts.Profile == "" || p == nil || p.pprofAddr == "" {
		return func() {}
	}
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		url := fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%d", p.pprofAddr, secs)
		if err := fetchTo(ctx, url, filepath.Join(b.opts.Profile, name+".trace"), time.Duration(secs+30)*time.Second); err != nil {
			fmt.Fprintf(b.out, "  trace %s: %v\n", name, err)
		}
	})
	return wg.Wait
}

// profileHeap saves p's heap profile (in-use and allocated).
func (b *bench) profileHeap(ctx context.Context, p *proc, name string) {
	if b.opts.Profile == "" || p == nil || p.pprofAddr == "" {
		return
	}
	url := fmt.Sprintf("http://%s/debug/pprof/heap", p.pprofAddr)
	if err := fetchTo(ctx, url, filepath.Join(b.opts.Profile, name+".heap.pprof"), 30*time.Second); err != nil {
		fmt.Fprintf(b.out, "  profile %s: %v\n", name, err)
	}
}

func fetchTo(ctx context.Context, url, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
