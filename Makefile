# make test   - go vet + all tests against real Postgres and embedded JetStream (installs Postgres if missing)
#               extra go test flags: make test ARGS="-run TestRelay -v"
# make build  - build every command into bin/
# make demo   - run the end-to-end demo (Ctrl-C stops it; make demo ARGS="--duration 10s" for a bounded run)
# make bench  - run the benchmark
# make fmt    - gofmt all Go files
# make vet    - go vet

.PHONY: test build demo bench fmt vet

test:
	./scripts/test.sh $(ARGS)

build:
	go build -o bin/ ./cmd/...

demo:
	go build -o bin/ ./cmd/relay ./cmd/sink ./cmd/demo
	./bin/demo --bin-dir bin $(ARGS)

bench:
	go run ./cmd/bench

fmt:
	gofmt -w .

vet:
	go vet ./...

# make chaos  - the long chaos run: relay and sink processes under kill -9, failover, NATS and Postgres
#               restarts while writers commit; prints the figures (docs/RELIABILITY.md). CHAOS_SEED=n reproduces.
#               CHAOS_FAULTS=postgres-failover adds Postgres failovers to a synchronous standby (opt-in).
.PHONY: chaos
chaos:
	CHAOS=long go test ./internal/chaos -run TestChaos -v -timeout 60m -count=1
