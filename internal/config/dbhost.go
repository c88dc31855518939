package config

import (
	"context"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
)

// DBHost remembers the database server a pool's newest connection reached,
// as host:port. With a multi-host DATABASE_URL
// (target_session_attrs=read-write) that is the primary the pool follows:
// after a failover the connections to the old primary fail and new ones
// reach the promoted standby, and the log says so.
type DBHost struct {
	host atomic.Pointer[string]
	log  zerolog.Logger
}

// TrackDBHost hooks into cfg's AfterConnect (keeping any hook already set).
func TrackDBHost(cfg *pgxpool.Config, log zerolog.Logger) *DBHost {
	h := &DBHost{log: log}
	next := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		h.set(conn.PgConn().Conn().RemoteAddr().String())
		if next != nil {
			return next(ctx, conn)
		}
		return nil
	}
	return h
}

func (h *DBHost) set(host string) {
	prev := h.host.Swap(&host)
	switch {
	case prev == nil:
		h.log.Info().Str("db_host", host).Msg("database connected")
	case *prev != host:
		h.log.Warn().Str("db_host", host).Str("previous_db_host", *prev).Msg("database host changed: connected to another server")
	}
}

// Host is the server of the newest connection, "" before the first.
func (h *DBHost) Host() string {
	if p := h.host.Load(); p != nil {
		return *p
	}
	return ""
}
