# zerofs — see README.md. Targets:
#   make run     build and serve config.example.toml (file:// store under ./data, loopback)
#   make test    install test dependencies (apt packages, versitygw), then run every test
#   make test-minio  the store conformance suite and S3 integration tests against
#                MinIO instead of versitygw (not part of make test; docs/stores.md)
#   make bench   run the benchmarks (writes nothing; see docs/benchmarks.md)
#   make fuzz    run every fuzz target for FUZZTIME (default 60s)
#   make nbd-tester  NBD's own test client (nbd-tester-client, built from the
#                NetworkBlockDevice/nbd source) against zerofs, plain and TLS
#   make soak    the long randomized crash-recovery run (5 random seeds of
#                20,000 operations under -race: about 40 min each here)

GO       ?= go
GOFLAGS  ?= -buildvcs=false
export GOFLAGS

VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all build run test test-minio test-deps check unit fuzz-quick fuzz bench bench-remote bench-tls bench-start bench-snapshot soak clean nbd-tester

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/zerofs ./cmd/zerofs

run: build
	./bin/zerofs run -c config.example.toml

test: test-deps check unit fuzz-quick

test-deps:
	./scripts/install-test-deps.sh

# The S3 tests (store conformance suite, fault injection, fs integration, the
# fault proxy) against MinIO: scripts/install-minio.sh builds it once (~9 min
# of CPU), testutil.StartS3Server starts it when ZEROFS_S3_SERVER=minio.
test-minio:
	./scripts/install-minio.sh
	ZEROFS_S3_SERVER=minio $(GO) test -race -count=1 -timeout 30m -run 'S3|^TestProxy$$' ./store ./fs ./internal/s3proxy

# Formatting and vet first: cheap, and a failure there is the clearest.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every package under the race detector: the engine is concurrent throughout.
unit:
	$(GO) test -race -count=1 -timeout 20m ./...

# Not in make test: it builds another project's C client (scripts/nbd-tester-client.sh).
nbd-tester: build
	ZEROFS_BIN=$(CURDIR)/bin/zerofs ./scripts/nbd-tester-client.sh

fuzz-quick:
	FUZZTIME=2000x ./scripts/fuzz.sh

fuzz:
	FUZZTIME=$${FUZZTIME:-60s} ./scripts/fuzz.sh

# Benchmarks, each against a baseline in the same run (docs/benchmarks.md):
# flush vs a bare PUT/fsync, the engine alone, NBD vs nbdkit memory (fio),
# NBD over TLS vs plaintext (bench-tls), NFS vs nfs-ganesha (set NFS_BENCH_NO_GANESHA=1 where ganesha cannot run),
# NBD on a store 20 ms away (bench-remote), start time (bench-start), and
# snapshot and clone of a 100 GiB device vs copying it (bench-snapshot).
bench: test-deps
	$(GO) test -run '^$$' -bench 'BenchmarkFlush' -benchtime 500x ./fs
	$(GO) test -run '^$$' -bench 'BenchmarkEngine' -benchtime 3s ./fs
	./bench/nbd.sh
	./bench/tls.sh
	./bench/nfs.sh
	./bench/remote.sh
	./bench/start.sh
	./bench/snapshot.sh

bench-tls: test-deps
	./bench/tls.sh

bench-remote: test-deps
	./bench/remote.sh

# Start time with a full disk cache against an empty one, and after kill -9.
bench-start: test-deps
	./bench/start.sh

bench-snapshot: test-deps
	./bench/snapshot.sh

# Longer randomized crash-recovery runs with fresh seeds (not part of make test).
# soak's test is not piped through a filter: the pipe's status would hide a failure.
soak:
	for i in 1 2 3 4 5; do ZEROFS_MODEL_RANDOM=1 ZEROFS_MODEL_OPS=20000 $(GO) test -race -count=1 -timeout 3h -run TestModelRandomCrashes -v ./fs || exit 1; done

clean:
	rm -rf bin
