#!/usr/bin/env bash
# Runs go vet and the whole test suite against real, throwaway Postgres
# clusters and embedded NATS JetStream servers (see internal/localenv).
# Installs the PostgreSQL server binaries first if they are missing (with
# apt-get; without it, the tests run Postgres in containers when a Docker
# engine answers), and promtool for the checks of deploy/.
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
elif [[ "${TEST_POSTGRES:-}" == "container" ]]; then
	echo "test.sh: TEST_POSTGRES=container: Postgres runs in containers" >&2
elif ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	if command -v apt-get >/dev/null 2>&1; then
		echo "test.sh: PostgreSQL server binaries not found; installing them" >&2
		as_root apt-get update
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
	else
		# No package manager we know (macOS, say): the tests start Postgres in
		# containers when a Docker engine answers, and say so when none does.
		echo "test.sh: PostgreSQL server binaries not found and no apt-get; tests run Postgres in containers if Docker answers" >&2
	fi
fi

# promtool checks deploy/'s alert rules and dashboard queries (deploy's tests).
# CI installs it (Debian's prometheus package); elsewhere it is installed only
# when that is easy, and the checks are skipped without it.
if ! command -v promtool >/dev/null 2>&1; then
	if command -v apt-get >/dev/null 2>&1 && { [[ "${CI:-}" == "true" ]] || [[ "$(id -u)" -eq 0 ]]; }; then
		{ as_root apt-get update >/dev/null 2>&1 &&
			as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; } ||
			echo "test.sh: could not install promtool (prometheus package)" >&2
	else
		echo "test.sh: promtool not found; the rule checks in deploy/ are skipped (apt-get install prometheus)" >&2
	fi
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
