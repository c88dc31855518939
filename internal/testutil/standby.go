package testutil

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// Standby is a streaming replica of a primary started by StartPostgres, for
// failover tests: stop the primary with StopImmediate, Promote the standby,
// and let clients find the new primary through MultiHostURL.
type Standby struct {
	*localenv.Postgres
	Name string
}

// StandbyOption tunes StartStandby.
type StandbyOption func(*standbyConfig)

type standbyConfig struct {
	name string
	sync bool
}

// Synchronous makes the primary wait for the standby on every commit
// (synchronous_standby_names, synchronous_commit=remote_apply): whatever the
// primary acknowledged is on the standby when the primary dies.
func Synchronous() StandbyOption { return func(c *standbyConfig) { c.sync = true } }

// StandbyName sets the standby's application name (default "standby").
func StandbyName(name string) StandbyOption { return func(c *standbyConfig) { c.name = name } }

// StartStandby clones primary with pg_basebackup into tb.TempDir() and runs
// it as a hot standby on a random port (as the postgres user when root, like
// the primary). It is closed when the test ends.
func StartStandby(tb testing.TB, primary *localenv.Postgres, opts ...StandbyOption) *Standby {
	tb.Helper()
	cfg := standbyConfig{name: "standby"}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := primary.StartStandby(ctx, localenv.StandbyOptions{Dir: tb.TempDir(), Name: cfg.name})
	if err != nil {
		tb.Fatalf("start standby: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("standby log tail:\n%s", pg.LogTail(40))
		}
		if err := pg.Close(); err != nil {
			tb.Errorf("close standby: %v", err)
		}
	})
	if cfg.sync {
		if err := primary.RequireSyncStandby(ctx, cfg.name); err != nil {
			tb.Fatalf("synchronous standby: %v", err)
		}
	}
	return &Standby{Postgres: pg, Name: cfg.name}
}

// Promote turns the standby into a primary and waits until it accepts writes.
func (s *Standby) Promote(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Postgres.Promote(ctx); err != nil {
		tb.Fatalf("promote: %v\n%s", err, s.LogTail(20))
	}
}

// StopImmediate crashes pg: pg_ctl stop -m immediate, no shutdown checkpoint.
func StopImmediate(tb testing.TB, pg *localenv.Postgres) {
	tb.Helper()
	if err := pg.Stop("immediate"); err != nil {
		tb.Fatalf("stop postgres immediately: %v", err)
	}
}

// MultiHostURL is a connection string listing every server, in order, for
// database, with target_session_attrs=read-write: a client connects to the
// first that accepts writes, so after a promotion it finds the new primary.
func MultiHostURL(database string, servers ...*localenv.Postgres) string {
	hosts := make([]string, len(servers))
	for i, s := range servers {
		hosts[i] = fmt.Sprintf("127.0.0.1:%d", s.Port())
	}
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable&target_session_attrs=read-write",
		strings.Join(hosts, ","), url.PathEscape(database))
}
