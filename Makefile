# rbee: `make run` starts everything on this machine, `make test` runs every test.
GO       ?= go
BIN      ?= bin/rbee
FUZZTIME ?= 10s

.PHONY: all build run test vet unit race fuzz bench bench-go generate clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/rbee

run: build
	$(BIN) up

# The whole suite: static checks, then unit and integration tests. go test
# replays every fuzz target's seed corpus and testdata/fuzz as ordinary
# tests; it does not explore, so the suite gives the same verdict every
# run. Exploring is `make fuzz`.
test: vet unit

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

# third_party/jinja is its own module, so ./... does not reach it.
unit:
	$(GO) test -count=1 -timeout 15m ./...
	cd third_party/jinja && $(GO) test -count=1 .

# The packages whose goroutines meet, again under the race detector. The
# engine's numeric packages (quant, vec, gguf, tokenizer, synth, sample) are
# left out: single-goroutine code that takes minutes instrumented.
RACE_PKGS = ./bus/... ./queen/... ./worker/... ./hive/... ./schemas/... ./internal/... ./infer ./infer/chat ./infer/grammar
race:
	$(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)

# Explore with every fuzz target for FUZZTIME each (go test fuzzes one
# target per run); a crash it finds lands in the package's testdata/fuzz,
# which `make test` then replays. Targets: package and name.
FUZZ_TARGETS = \
	./infer/gguf:FuzzParse \
	./infer/quant:FuzzDequantize \
	./infer/tokenizer:FuzzEncode \
	./infer/chat:FuzzParseRender \
	./infer/grammar:FuzzFromJSONSchema \
	./schemas:FuzzValidate \
	./schemas:FuzzDecodeEvents \
	./schemas:FuzzEventCodec \
	./schemas:FuzzUnmarshalJob \
	./schemas:FuzzValidModelAndID \
	./bus:FuzzParsePubAck \
	./queen:FuzzOpenAIRequest \
	./queen:FuzzCheckBody \
	./queen:FuzzEmbedInput \
	./internal/apikey:FuzzDecode \
	./internal/config:FuzzDecode

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
	$(GO) test -run '^$$' -bench . -benchmem ./infer/... ./internal/... ./schemas/... ./bus/...

generate:
	$(GO) generate ./...

clean:
	rm -rf bin
