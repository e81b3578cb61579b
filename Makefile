# clipbuild: see README.md. `make help` lists the targets.

GO        ?= go
TAGS      := containers_image_openpgp,exclude_graphdriver_btrfs
export GOFLAGS := -buildvcs=false -tags=$(TAGS)
BIN       := bin/clipbuild
APT_PKGS  := buildah fuse3 busybox-static uidmap
TEST_TIMEOUT ?= 40m
# The OCI distribution-spec conformance suite, run against the embedded registry.
CONFORMANCE_VERSION := v0.0.0-20260831232431-97274622c111
CONFORMANCE := bin/conformance

.PHONY: help deps build test unit demo bench lint fuzz clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

deps: ## install the system packages clipbuild needs (apt-get; idempotent)
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	else echo "deps: all present ($(APT_PKGS))"; fi

build: ## build bin/clipbuild
	$(GO) build -o $(BIN) ./cmd/clipbuild

test: deps build $(CONFORMANCE) ## run unit and integration tests (integration needs root, buildah, FUSE)
	CLIPBUILD_BIN=$(CURDIR)/$(BIN) CLIPBUILD_CONFORMANCE_BIN=$(CURDIR)/$(CONFORMANCE) \
	  $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

$(CONFORMANCE):
	GOBIN=$(CURDIR)/bin GOFLAGS=-buildvcs=false $(GO) install github.com/opencontainers/distribution-spec/conformance@$(CONFORMANCE_VERSION)

unit: ## run the unit tests only
	$(GO) test -count=1 -short $$($(GO) list ./... | grep -v /test/)

demo: deps build ## build examples/hello into an archive, mount it and read a file
	./examples/demo.sh $(BIN)

bench: deps build ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./archive/ ./stages/

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean: ## remove build outputs
	rm -rf bin
