package config

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
)

// Transient reports errors a later attempt can overcome: Postgres or NATS not
// reachable yet, or JetStream not answering yet. Everything else (permissions,
// bad names, refused configuration) is for a person to fix.
func Transient(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "57P03" || strings.HasPrefix(pgErr.Code, "08") // cannot connect now, connection exception
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.Timeout(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// Retry runs f until it succeeds, retrying Transient errors with backoff
// (250ms up to 10s) and a warning naming what failed. It returns f's first
// other error, or nil once ctx ends.
func Retry(ctx context.Context, log zerolog.Logger, what string, f func() error) error {
	for wait := backoff.New(250*time.Millisecond, 10*time.Second); ; {
		err := f()
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !Transient(err) {
			return err
		}
		log.Warn().Err(err).Dur("retry_in", wait.Delay()).Msg(what + " failed, retrying")
		if !wait.Wait(ctx) {
			return nil
		}
	}
}
