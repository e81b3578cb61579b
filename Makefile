# clipbuild: see README.md. `make help` lists the targets.

GO        ?= go
TAGS      := containers_image_openpgp,exclude_graphdriver_btrfs
export GOFLAGS := -buildvcs=false -tags=$(TAGS)
BIN       := bin/clipbuild
APT_PKGS  := buildah fuse3 busybox-static uidmap zlib1g-dev libdeflate-dev gcc libc6-dev
TEST_TIMEOUT ?= 40m
# The OCI distribution-spec conformance suite, run against the embedded registry.
CONFORMANCE_VERSION := v0.0.0-20260831232431-97274622c111
CONFORMANCE := bin/conformance
# The S3 server the registry-on-S3 tests run on loopback (POSIX backend in a temp dir).
VERSITYGW_VERSION := v1.8.0
VERSITYGW := bin/versitygw

.PHONY: help deps build test unit demo bench lint fuzz clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

# apt_install installs the Debian packages in $(1) that are missing, with
# sudo when not root; it does nothing (quickly) when all are present.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	else echo "$@: all present ($(1))"; fi
endef

deps: $(VERSITYGW) ## install the system packages clipbuild needs (apt-get) and the test S3 server (idempotent)
	$(call apt_install,$(APT_PKGS))

$(VERSITYGW):
	GOBIN=$(CURDIR)/bin GOFLAGS=-buildvcs=false $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

build: ## build bin/clipbuild
	$(GO) build -o $(BIN) ./cmd/clipbuild

test: deps build $(CONFORMANCE) ## run unit and integration tests, then the rootless lane (needs root, buildah, FUSE)
	CLIPBUILD_BIN=$(CURDIR)/$(BIN) CLIPBUILD_CONFORMANCE_BIN=$(CURDIR)/$(CONFORMANCE) CLIPBUILD_VERSITYGW=$(CURDIR)/$(VERSITYGW) \
	  $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v /test/rootless)
	@# The rootless lane: a new user with subordinate ids runs builds, verify, pull and mounts (test/rootless).
	CLIPBUILD_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 15m -v -run '^TestRootlessLane$$' ./test/rootless/

$(CONFORMANCE):
	GOBIN=$(CURDIR)/bin GOFLAGS=-buildvcs=false $(GO) install github.com/opencontainers/distribution-spec/conformance@$(CONFORMANCE_VERSION)

unit: ## run the unit tests only
	$(GO) test -count=1 -short $$($(GO) list ./... | grep -v /test/)

demo: deps build ## serve the embedded registry, build examples/hello as v2, mount it, read a file
	./examples/demo.sh $(BIN)

bench: deps bench-deps build ## run the benchmark suite, BENCH_SCALE=small|medium|large (default medium); writes bench/RESULTS.md
	cd bench && CGO_ENABLED=1 $(GO) build -o out/clipbench ./cmd/clipbench
	bench/out/clipbench run --scale $(or $(BENCH_SCALE),medium) --clipbuild $(BIN) --dir bench \
	  --command "make bench BENCH_SCALE=$(or $(BENCH_SCALE),medium)"

.PHONY: bench-deps
BENCH_APT_PKGS := zlib1g-dev libdeflate-dev gcc libc6-dev time gzip
bench-deps: ## install what make bench needs besides make deps (apt-get; idempotent)
	$(call apt_install,$(BENCH_APT_PKGS))

fuzz: ## run every fuzz target for FUZZTIME each (default 30s); `make test` runs their seed corpora
	@set -e; for t in archive:FuzzIndexerAddLayer archive:FuzzOpen pipeline:FuzzLoadConfig registry:FuzzParseReference stages:FuzzIndexerMatchesUnpack; do \
	  pkg=$${t%%:*}; name=$${t#*:}; \
	  echo "fuzz: $$name (./$$pkg) for $${FUZZTIME:-30s}"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime=$${FUZZTIME:-30s} -fuzzminimizetime=$${FUZZMINIMIZETIME:-20x} ./$$pkg/; \
	done

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean: ## remove build outputs
	rm -rf bin
