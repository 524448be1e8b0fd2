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

.PHONY: all build deps test unit mounttest demo e2e bench bench-quick install uninstall clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ovlfs ./cmd/ovlfs
	$(if $(filter bin/ovlctl,$(BINS)),$(GO) build -ldflags '$(LDFLAGS)' -o bin/ovlctl ./cmd/ovlctl)

deps:
	@missing=""; \
	command -v fusermount3 >/dev/null 2>&1 || missing="$$missing fuse3"; \
	command -v getfattr >/dev/null 2>&1 || missing="$$missing attr"; \
	command -v setfacl >/dev/null 2>&1 || missing="$$missing acl"; \
	command -v fuse-overlayfs >/dev/null 2>&1 || missing="$$missing fuse-overlayfs"; \
	command -v man >/dev/null 2>&1 || missing="$$missing man-db"; \
	command -v zsh >/dev/null 2>&1 || missing="$$missing zsh"; \
	if [ "$$(id -u)" -eq 0 ] && [ -c /dev/fuse ] && [ "$$(stat -c %a /dev/fuse)" != 666 ]; then \
		echo "deps: chmod 0666 /dev/fuse (the distributions' default: rootless FUSE needs it)"; \
		chmod 0666 /dev/fuse; \
	fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
		echo "missing packages:$$missing (run: sudo apt-get install -y$$missing)" >&2; exit 1; \
	fi; \
	apt-get install -y $$missing || { apt-get update && apt-get install -y $$missing; }

# The mount tests need root (a private mount namespace, the kernel overlay
# as the oracle); an ordinary user gets vet and the unit tests, and one line.
test: build
	$(GO) vet ./...
	$(GO) test $(UNIT)
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "make test: mount tests skipped: they need root (unshare -m, mount -t overlay)"; \
	else \
		$(MAKE) --no-print-directory deps && \
		unshare -m --propagation private $(GO) test -count=1 -v -skip '^TestRel' ./tests/...; \
	fi

demo: deps build
	bash tests/demo.sh

# Podman and Buildah from Debian with bin/ovlfs as mount_program, as root and
# rootless (installs podman, buildah, runc, uidmap, busybox-static; creates
# the user ovlfs-e2e), then rootless Docker with ovlfs as its fuse-overlayfs
# against a root dockerd on the kernel's overlay2 (installs docker.io and
# rootlesskit). See tests/e2e/e2e.sh and tests/e2e/docker.sh.
e2e: deps build
	@rc=0; bash tests/e2e/e2e.sh || rc=1; bash tests/e2e/docker.sh || rc=1; exit $$rc

# Faults, hostile layers, bad input, load, RSS and fds, in a private
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

# make install [PREFIX=/usr/local] [DESTDIR=...]: the programs, the mount(8)
# helper (mount looks for /sbin/mount.fuse.TYPE), man pages and completion.
# make uninstall (same variables) removes exactly these files.
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= /sbin
MANDIR     ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
INSTALLED := $(BINDIR)/ovlfs $(BINDIR)/ovlctl $(SBINDIR)/mount.fuse.ovlfs \
	$(MANDIR)/man1/ovlfs.1 $(MANDIR)/man1/ovlctl.1 \
	$(BASHCOMPDIR)/ovlfs $(BASHCOMPDIR)/ovlctl $(ZSHCOMPDIR)/_ovlfs

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 0755 bin/ovlfs bin/ovlctl $(DESTDIR)$(BINDIR)/
	sed 's|@BINDIR@|$(BINDIR)|' dist/mount.fuse.ovlfs > $(DESTDIR)$(SBINDIR)/mount.fuse.ovlfs
	chmod 0755 $(DESTDIR)$(SBINDIR)/mount.fuse.ovlfs
	install -m 0644 docs/man/ovlfs.1 docs/man/ovlctl.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 dist/completion/ovlfs.bash $(DESTDIR)$(BASHCOMPDIR)/ovlfs
	install -m 0644 dist/completion/ovlfs.bash $(DESTDIR)$(BASHCOMPDIR)/ovlctl
	install -m 0644 dist/completion/_ovlfs $(DESTDIR)$(ZSHCOMPDIR)/_ovlfs

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

clean:
	rm -rf bin
