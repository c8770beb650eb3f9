# orch: `make build` → bin/orch, `make test` → the whole suite (scripts/test.sh).
.PHONY: build test run bench clean

build:
	go build -o bin/orch ./cmd/orchestrator

test:
	./scripts/test.sh

run: build
	bin/orch run pipelines/churn.yaml

bench: build
	./bench/run.sh

clean:
	rm -rf bin .orch
