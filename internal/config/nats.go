package config

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
)

// ConnectNATS opens the NATS connection with the configured credentials. It
// keeps reconnecting forever once connected (buffering nothing: publishers see
// errors and retry themselves), and retries the first connection until ctx ends,
// so a relay or sink started before NATS comes up waits instead of exiting.
// Authentication and TLS errors are returned at once: retrying cannot fix them.
// So is a server older than MinNATSServer (CheckServerVersion): the process
// stops with a message naming both versions instead of failing later on the
// first request the old server refuses.
func ConnectNATS(ctx context.Context, c *Common, name string, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ReconnectBufSize(-1),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(10 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected")
			} else {
				log.Info().Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", RedactNATSURL(nc.ConnectedUrl())).Msg("nats reconnected")
			// A cluster being rolled back may hand us an older node; the
			// connection carries on, but the operator should know.
			if err := CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
				log.Error().Err(err).Str("server", RedactNATSURL(nc.ConnectedUrl())).Msg("nats reconnected to an unsupported server")
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}
	if c.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	}
	if c.NATSNKeySeed != "" {
		o, err := nats.NkeyOptionFromSeed(c.NATSNKeySeed)
		if err != nil {
			return nil, fmt.Errorf("read NATS_NKEY_SEED: %w", err)
		}
		opts = append(opts, o)
	}
	if c.NATSUser != "" {
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
	}
	if c.NATSToken != "" {
		opts = append(opts, nats.Token(c.NATSToken))
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	urls := strings.Join(c.NATSURLs, ",")
	retry := backoff.New(250*time.Millisecond, 10*time.Second)
	for {
		nc, err := nats.Connect(urls, opts...)
		if err == nil {
			if err := CheckServerVersion(nc.ConnectedServerVersion()); err != nil {
				server := RedactNATSURL(nc.ConnectedUrl())
				nc.Close()
				return nil, fmt.Errorf("connect to nats at %s: %w", server, err)
			}
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
			errors.Is(err, nats.ErrAuthRevoked) || strings.Contains(err.Error(), "tls:") ||
			strings.Contains(err.Error(), "x509") {
			return nil, fmt.Errorf("connect to nats: %w", err)
		}
		log.Warn().Err(err).Dur("retry_in", retry.Delay()).Msg("cannot connect to nats, retrying")
		if !retry.Wait(ctx) {
			return nil, fmt.Errorf("connect to nats: %w", err)
		}
	}
}
