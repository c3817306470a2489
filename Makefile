# Sluice: `make run` starts a local cluster, `make test` runs every test.
GO ?= go
BIN := bin


.PHONY: all build run test deps lint unit gonsq-suite bench clean crash-long

all: build

build:
	$(GO) build -o $(BIN)/ ./apps/...

# One process: nsqlookupd + nsqd + nsqadmin on NSQ's default ports, data in ./sluice-data.
run: build
	./$(BIN)/sluice

deps:
	./scripts/install-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit, integration, browser and fuzz-seed tests with the race detector.
unit:
	./scripts/unit-tests.sh

gonsq-suite:
	./scripts/gonsq-suite.sh

test:
	./scripts/test-all.sh

# The long crash schedule: 200 rounds of kill -9 against a durable topic
# (CI runs 3), and the storage crash test at 2000 crash points (CI: 60).
crash-long:
	SLUICE_CRASH_ROUNDS=200 $(GO) test -count=1 -timeout 60m -run TestDurableTopicSurvivesKill9 -v ./internal/crashtest/
	SLUICE_STORE_LONG=1 $(GO) test -count=1 -timeout 30m -run TestCrashAtAnyStep -v ./store/

# The long replication chaos run: 5 minutes of kill -9, SIGSTOP, cut,
# partitioned and wiped (lost disk) nodes and step-downs against a
# replicated topic (CI runs 40 s).
chaos-long:
	SLUICE_LONG=1 $(GO) test -count=1 -timeout 20m -run TestChaosReplicatedTopic -v ./internal/replicatest/

bench:
	$(GO) run ./bench/cmd/sluice-bench

clean:
	rm -rf $(BIN)

-include admin/ui.mk
