package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// process is a relay or sink running as a child process, its output going to
// a log file (see localenv.Child).
type process struct {
	*localenv.Child
	name    string // relay_a, sink_b, ...
	logPath string
	addr    string // HTTP_ADDR (host:port)
}

// startProcess starts bin with env added to the inherited environment
// (minus the variables the demo controls).
func startProcess(name, bin, logPath, addr string, env []string) (*process, error) {
	c, err := localenv.StartChild(name, logPath, append(childEnviron(), env...), bin, "run")
	if err != nil {
		return nil, err
	}
	return &process{Child: c, name: name, logPath: logPath, addr: addr}, nil
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

func (p *process) exited() bool                     { return p.Exited() }
func (p *process) stop(timeout time.Duration) error { return p.Stop(timeout) }
func (p *process) tail(n int) string                { return p.Tail(n) }

// exitError describes how the process ended.
func (p *process) exitError() error {
	if p.Err() == nil {
		return fmt.Errorf("%s exited (status 0) unexpectedly", p.name)
	}
	return fmt.Errorf("%s exited unexpectedly: %w", p.name, p.Err())
}

func (p *process) waitReady(ctx context.Context, timeout time.Duration) error {
	return p.WaitReady(ctx, p.addr, timeout)
}

func freeAddr() (string, error) { return localenv.FreeAddr() }
