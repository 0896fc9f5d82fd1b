# rbee: `make run` starts everything on this machine, `make test` runs every test.
GO       ?= go
BIN      ?= bin/rbee
FUZZTIME ?= 10s

.PHONY: all build run test vet unit fuzz bench bench-go generate clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/rbee

run: build
	$(BIN) up

# The whole suite: static checks, unit and integration tests, then a short
# run of every fuzz target (each replays its seed corpus first).
test: vet unit fuzz

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -count=1 -timeout 15m ./...

# Fuzz targets: package and name. go test fuzzes one target per run.
FUZZ_TARGETS = \
	./infer/gguf:FuzzParse \
	./infer/quant:FuzzDequantize \
	./infer/tokenizer:FuzzEncode \
	./infer/chat:FuzzParseRender \
	./schemas:FuzzValidate \
	./queen:FuzzOpenAIRequest

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# The engine and rbee up measured on this machine: a table on stdout and
# every raw figure in BENCH_OUT. Models are generated once into
# $RBEE_BENCH_CACHE (default: ~/.cache/rbee/bench), outside the repository.
BENCH_OUT ?= bench.json
bench: build
	$(BIN) bench --out $(BENCH_OUT)

# The Go micro-benchmarks of the engine's packages.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./infer/... ./internal/...

generate:
	$(GO) generate ./...

clean:
	rm -rf bin
