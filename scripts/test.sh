#!/usr/bin/env bash
# Runs go vet and the whole test suite against real, throwaway Postgres
# clusters and embedded NATS JetStream servers (see internal/localenv).
# Installs the PostgreSQL server binaries first if they are missing.
# Extra arguments go to `go test`, e.g. scripts/test.sh -run TestRelay -v
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
	if [[ "$(id -u)" -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		echo "test.sh: need root (or sudo) to run: $*" >&2
		exit 1
	fi
}

if [[ -n "${PG_BIN:-}" ]]; then
	[[ -x "$PG_BIN/initdb" ]] || { echo "test.sh: PG_BIN=$PG_BIN has no initdb" >&2; exit 1; }
elif ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	echo "test.sh: PostgreSQL server binaries not found; installing them" >&2
	as_root apt-get update
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
fi

go vet ./...
# With a Docker client that has compose, validate the compose file as Docker
# reads it (no engine needed); cmd/demo's tests check it without Docker too.
# In CI, install Debian's docker-compose for that if nothing else is there.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1 && [[ "${CI:-}" == "true" ]]; then
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y docker-compose >/dev/null 2>&1 ||
		{ as_root apt-get update >/dev/null 2>&1 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y docker-compose >/dev/null 2>&1; } ||
		echo "test.sh: could not install docker-compose; the compose file is still checked by cmd/demo's tests" >&2
fi
if docker compose version >/dev/null 2>&1; then
	docker compose -f docker-compose.yml config -q && echo "docker-compose.yml: valid (docker compose config)"
elif command -v docker-compose >/dev/null 2>&1; then
	docker-compose -f docker-compose.yml config -q && echo "docker-compose.yml: valid (docker-compose config)"
fi
go test -count=1 -timeout 12m ./... "$@"
