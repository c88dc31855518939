package localenv_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// TestChooseBackend: local binaries win, a container is the fallback when
// a Docker engine answers, TEST_POSTGRES forces either, and with neither the
// error says how to get both.
func TestChooseBackend(t *testing.T) {
	missing := fmt.Errorf("%w: install them", localenv.ErrPostgresNotInstalled)
	noDocker := errors.New("cannot connect to the docker daemon")
	for _, tc := range []struct {
		force     string
		installed error
		docker    error
		want      localenv.Backend
		wantErr   string
		askDocker bool
	}{
		{"", nil, nil, localenv.BackendLocal, "", false},
		{"", nil, noDocker, localenv.BackendLocal, "", false},
		{"", missing, nil, localenv.BackendContainer, "", true},
		{"", missing, noDocker, "", "nor does a Docker engine answer", true},
		{"local", missing, nil, localenv.BackendLocal, "install them", false},
		{"local", nil, nil, localenv.BackendLocal, "", false},
		{"container", nil, nil, localenv.BackendContainer, "", true},
		{"container", nil, noDocker, "", "TEST_POSTGRES=container but no Docker engine answers", true},
		{"docker", nil, nil, "", `TEST_POSTGRES="docker"`, false},
	} {
		asked := false
		got, err := localenv.ChooseBackend(tc.force, tc.installed, func() error { asked = true; return tc.docker })
		name := fmt.Sprintf("force=%q installed=%v docker=%v", tc.force, tc.installed, tc.docker)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err=%v, want one containing %q", name, err, tc.wantErr)
			}
		} else if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", name, got, err, tc.want)
		}
		if asked != tc.askDocker {
			t.Errorf("%s: asked Docker=%v, want %v", name, asked, tc.askDocker)
		}
	}
	// The fallback keeps the install hint of the missing binaries.
	_, err := localenv.ChooseBackend("", missing, func() error { return noDocker })
	if !errors.Is(err, localenv.ErrPostgresNotInstalled) {
		t.Errorf("err=%v does not wrap ErrPostgresNotInstalled", err)
	}
}

// TestPostgresContainer runs the container path end to end where a Docker
// engine answers, and is skipped elsewhere: the cluster accepts logical
// replication, survives a crash (immediate stop) and a restart on the same
// URL, and Close removes it.
func TestPostgresContainer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := localenv.DockerAvailable(ctx); err != nil {
		t.Skipf("no Docker engine: %v", err)
	}
	pg, err := localenv.StartPostgresContainer(ctx, localenv.PostgresOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := pg.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := pg.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	query := func(sql string) string {
		t.Helper()
		conn, err := pgx.Connect(ctx, pg.URL("app"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var s string
		if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := query("SHOW wal_level"); got != "logical" {
		t.Fatalf("wal_level=%s", got)
	}
	query("SELECT lsn::text FROM pg_create_logical_replication_slot('probe', 'pgoutput')")
	if err := pg.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	if got := query("SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'probe'"); got != "1" {
		t.Fatalf("replication slot lost in the crash: %s slots", got)
	}
}
