package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// StartNATSWithConfig starts a JetStream server from the configuration text
// conf (users, permissions), stopped when the test ends, with a logger that
// keeps its permission violations.
func StartNATSWithConfig(tb testing.TB, conf string) (*localenv.NATS, *ViolationLog) {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	n, err := localenv.StartNATS(localenv.NATSOptions{Dir: filepath.Join(dir, "js"), ConfigFile: path})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(n.Shutdown)
	log := &ViolationLog{}
	n.Server().SetLoggerV2(log, false, false, false)
	return n, log
}

// SinkUsersConf is a NATS account with JetStream in which admin may do
// anything and the users pull and push have exactly the permissions the
// README ("Least privilege") documents for a sink of that CONSUMER_MODE with
// AUTO_PROVISION=false (app orders, default names: stream
// jetstream-bridge-stream, durable orders-workers, DLQ orders.sync.dlq).
const SinkUsersConf = `
accounts {
  BRIDGE {
    jetstream: enabled
    users: [
      { user: admin, password: admin }
      { user: pull, password: pull, permissions: {
          publish: { allow: [
            "$JS.API.CONSUMER.MSG.NEXT.jetstream-bridge-stream.orders-workers",
            "$JS.ACK.jetstream-bridge-stream.orders-workers.>",
            "orders.sync.dlq"
          ] }
          subscribe: { allow: ["_INBOX.>"] }
      } }
      { user: push, password: push, permissions: {
          publish: { allow: ["$JS.ACK.jetstream-bridge-stream.orders-workers.>", "orders.sync.dlq"] }
          subscribe: { allow: ["_bridge.orders-workers orders-workers", "_INBOX.>"] }
      } }
    ]
  }
}
`

// ViolationLog is a nats-server logger (Server.SetLoggerV2) that keeps the
// lines about permission violations.
type ViolationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *ViolationLog) keep(format string, v ...any) {
	if s := fmt.Sprintf(format, v...); strings.Contains(s, "Violation") {
		l.mu.Lock()
		l.lines = append(l.lines, s)
		l.mu.Unlock()
	}
}

// Lines returns the violations logged so far.
func (l *ViolationLog) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func (l *ViolationLog) Noticef(format string, v ...any) { l.keep(format, v...) }
func (l *ViolationLog) Warnf(format string, v ...any)   { l.keep(format, v...) }
func (l *ViolationLog) Fatalf(format string, v ...any)  { l.keep(format, v...) }
func (l *ViolationLog) Errorf(format string, v ...any)  { l.keep(format, v...) }
func (l *ViolationLog) Debugf(format string, v ...any)  { l.keep(format, v...) }
func (l *ViolationLog) Tracef(format string, v ...any)  { l.keep(format, v...) }

// RelayUsersConf is a NATS account with JetStream in which admin may do
// anything and relay has the least privilege the README documents for a
// relay of app app_a with AUTO_PROVISION=false (publish app_a.sync.>,
// subscribe _INBOX.>), plus elsewhere.>, which the relay may publish to but
// no stream of the bridge covers.
const RelayUsersConf = `
accounts {
  BRIDGE {
    jetstream: enabled
    users: [
      { user: admin, password: adminpw }
      { user: relay, password: relaypw, permissions: {
          publish: ["app_a.sync.>", "elsewhere.>"]
          subscribe: ["_INBOX.>"]
      } }
    ]
  }
}
`
