# ovlfs: build, test and demo. `make test` and `make demo` mount for real and
# want root (the mount tests skip with a message otherwise).

export PATH := /usr/local/go/bin:$(PATH)
# Static binaries (pure-Go os/user and net): no dynamic loader at each start,
# which is most of a mount's time (the daemon re-executes itself), and
# nothing to break when libc differs in a container.
export CGO_ENABLED := 0

GO      ?= go
PREFIX  ?= /usr/local
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

# cmd/ovlctl is built once it has a main package.
BINS := bin/ovlfs $(if $(wildcard cmd/ovlctl/*.go),bin/ovlctl)
# Unit-tested packages that exist (empty directories are not in git).
UNIT := $(foreach d,cmd fs whiteout cow layout,$(if $(wildcard $(d)),./$(d)/...))

.PHONY: all build deps test unit mounttest demo e2e bench bench-quick install clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ovlfs ./cmd/ovlfs
	$(if $(filter bin/ovlctl,$(BINS)),$(GO) build -ldflags '$(LDFLAGS)' -o bin/ovlctl ./cmd/ovlctl)

deps:
	@missing=""; \
	command -v fusermount3 >/dev/null 2>&1 || missing="$$missing fuse3"; \
	command -v getfattr >/dev/null 2>&1 || missing="$$missing attr"; \
	command -v setfacl >/dev/null 2>&1 || missing="$$missing acl"; \
	if [ "$$(id -u)" -eq 0 ] && [ -c /dev/fuse ] && [ "$$(stat -c %a /dev/fuse)" != 666 ]; then \
		echo "deps: chmod 0666 /dev/fuse (the distributions' default: rootless FUSE needs it)"; \
		chmod 0666 /dev/fuse; \
	fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
		echo "missing packages:$$missing (run: sudo apt-get install -y$$missing)" >&2; exit 1; \
	fi; \
	apt-get install -y $$missing || { apt-get update && apt-get install -y $$missing; }

test: deps build
	$(GO) vet ./...
	$(GO) test $(UNIT)
	unshare -m --propagation private $(GO) test -count=1 -v -skip '^TestRel' ./tests/...

demo: deps build
	bash tests/demo.sh

# Podman and Buildah from Debian with bin/ovlfs as mount_program, as root and
# rootless (installs podman, buildah, runc, uidmap, busybox-static; creates
# the user ovlfs-e2e). See tests/e2e/e2e.sh.
e2e: deps build
	bash tests/e2e/e2e.sh

# Faults, hostile layers, bad input, load, RSS and fds (issue 6), in a private
# mount namespace; a table, then "reliability: N passed, M failed".
# RELIABILITY_LONG=1: the long form (more kill points, 10-minute soak).
.PHONY: reliability
reliability: deps build
	bash tests/reliability/run.sh

# ovlfs, the kernel overlay and fuse-overlayfs side by side (bench/README.md):
# data is prepared once under /var/tmp/ovlfs-bench; results go to bench/results.
# BENCH_FLAGS=-unpinned, -rounds N, -only REGEXP, -data DIR, ... (bin/ovlbench -h)
bench bench-quick: deps build
	$(GO) build -o bin/ovlbench ./bench
	bin/ovlbench $(if $(filter bench-quick,$@),-quick) $(BENCH_FLAGS)

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf bin
