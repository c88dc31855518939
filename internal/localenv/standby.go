package localenv

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// StandbyOptions configures StartStandby.
type StandbyOptions struct {
	// Dir holds the standby cluster, as PostgresOptions.Dir; required.
	Dir string
	// Name is the standby's application name on the primary (cluster_name),
	// the name synchronous_standby_names refers to. Default "standby".
	Name string
	// Settings are extra postgresql.conf settings of the standby.
	Settings map[string]string
}

// StartStandby clones p into opts.Dir with pg_basebackup (-R: it starts as a
// standby following p; -X stream: the WAL written during the copy comes
// along) and starts it as a hot standby on a free port. The clone has p's
// settings, wal_level=logical included, so once promoted it serves the
// relay as the primary did (replication slots are not copied).
func (p *Postgres) StartStandby(ctx context.Context, opts StandbyOptions) (*Postgres, error) {
	if opts.Dir == "" {
		return nil, errors.New("start standby: StandbyOptions.Dir is required")
	}
	if opts.Name == "" {
		opts.Name = "standby"
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolve standby dir: %w", err)
	}
	s := &Postgres{dir: dir, dataDir: filepath.Join(dir, "data"), logFile: filepath.Join(dir, "postgres.log"),
		binDir: p.binDir, cred: p.cred}
	if err := s.prepareDir(); err != nil {
		return nil, err
	}
	if err := s.run(ctx, "pg_basebackup", "-h", "127.0.0.1", "-p", fmt.Sprint(p.port), "-U", "postgres",
		"-D", s.dataDir, "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"); err != nil {
		return nil, fmt.Errorf("clone primary: %w", err)
	}
	settings := map[string]string{"hot_standby": "on", "cluster_name": opts.Name}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	for i := 1; ; i++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		if err := s.writeConfig(settings); err != nil {
			return nil, err
		}
		err = s.Start(ctx)
		if err == nil {
			return s, nil
		}
		if i >= 3 || !s.portInUse() {
			_ = s.Close()
			return nil, err
		}
	}
}

// Promote ends recovery on a standby and waits until it accepts writes.
func (p *Postgres) Promote(ctx context.Context) error {
	if err := p.pgctl(ctx, "promote", "-D", p.dataDir, "-w", "-t", "60"); err != nil {
		return fmt.Errorf("promote standby: %w", err)
	}
	for {
		inRecovery, err := p.InRecovery(ctx)
		if err == nil && !inRecovery {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for promotion: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// InRecovery reports pg_is_in_recovery(): true on a standby.
func (p *Postgres) InRecovery(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var in bool
	err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&in)
	return in, err
}

// RequireSyncStandby makes p commit only once standby name has the commit
// (synchronous_standby_names, remote_apply so a read there sees it) and
// waits until the standby is attached as synchronous.
func (p *Postgres) RequireSyncStandby(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, q := range []string{
		"ALTER SYSTEM SET synchronous_standby_names = " + quoteLiteral(`"`+name+`"`),
		"ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
		"SELECT pg_reload_conf()",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("make standby %s synchronous: %w", name, err)
		}
	}
	for {
		var state string
		err := conn.QueryRow(ctx, "SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE application_name = $1", name).Scan(&state)
		if err == nil && state == "sync" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for synchronous standby %s: %w (state %q, last error: %v)", name, ctx.Err(), state, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
