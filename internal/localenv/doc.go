// Package localenv starts throwaway local Postgres clusters and embedded NATS
// JetStream servers for tests, the demo and benchmarks.
//
// It is responsible for getting real servers up on 127.0.0.1 with settings the
// bridge needs (wal_level=logical, JetStream enabled), restarting them in place,
// and tearing them down. It is not for production: clusters run with fsync off,
// trust authentication and no TLS.
//
// Postgres runs from the distribution's server binaries (PG_BIN, or the highest
// version under /usr/lib/postgresql/*/bin). Postgres refuses to run as root, so
// when the caller is root the server runs as the "postgres" OS user.
package localenv
