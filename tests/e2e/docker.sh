#!/usr/bin/env bash
# The Docker part of `make e2e`: Debian's dockerd, rootless through
# rootlesskit, with `--storage-driver fuse-overlayfs` and bin/ovlfs found as
# `fuse-overlayfs` on its PATH; the same steps on a root dockerd with the
# kernel's overlay2 are the oracle. Then ovlctl reads the rootless Docker
# store and must not change a byte of it.
#
# Both daemons have their own data root, exec root, pidfile, config and
# socket in a temp dir, inside a private mount and PID namespace with tmpfs
# over /run: the host's Docker set-up is never read or touched, and no mount
# or process outlives the run. Images come from a local docker-archive.
#
# The last line is `docker: N passed, M failed`; exit status 1 on any failure.
# Environment: OVLFS_E2E_USER (default ovlfs-e2e), the rootless user, made
# with a subuid/subgid range when missing; OVLFS_E2E_KEEP=1 keeps the temp dir.

set -uo pipefail
export LC_ALL=C

repo=$(cd "$(dirname "$0")/../.." && pwd)
self=$repo/tests/e2e/docker.sh
E2E_USER=${OVLFS_E2E_USER:-ovlfs-e2e}
PKGS="docker.io rootlesskit uidmap busybox-static"

NAME=docker
. "$repo/tests/e2e/lib.sh"
# check NAME CMD...: pass if CMD succeeds, else fail with its output.
check() {
	local name=$1 out; shift
	if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "exit $?: $*" "$out"; fi
}
# same NAME FILE_A FILE_B: pass if the two files are equal.
same() {
	if cmp -s "$2" "$3"; then pass "$1"; else fail "$1" "differ (< rootless ovlfs, > kernel overlay2)" "$(diff "$2" "$3" | head -40)"; fi
}

# ---------------------------------------------------------------- outer part
if [[ ${1:-} != --inner ]]; then
	[[ $(id -u) -eq 0 ]] || die "must run as root (make e2e)"
	start=$SECONDS
	for b in ovlfs ovlctl; do
		[[ -x $repo/bin/$b ]] || die "$repo/bin/$b missing: make build"
	done
	# --no-install-recommends: no host dockerd service is wanted.
	# shellcheck disable=SC2086
	APT_FLAGS=--no-install-recommends install_missing $PKGS
	ensure_user "$E2E_USER"
	T=$(mktemp -d /var/tmp/ovlfs-docker.XXXXXX)
	chmod 755 "$T"
	# Private copies: a concurrent `make build` cannot swap them mid-run.
	mkdir -p "$T/bin"
	cp "$repo/bin/ovlfs" "$repo/bin/ovlctl" "$T/bin/"
	ln -s ovlfs "$T/bin/fuse-overlayfs"
	echo "docker: ovlfs $("$T/bin/ovlfs" --version 2>&1 | head -1), $(dockerd --version), rootlesskit $(rootlesskit --version | awk '{print $3}'), temp dir $T"
	unshare --mount --pid --fork --mount-proc --propagation private bash "$self" --inner "$T"
	finish_outer "$T" $? "$start"
fi

# ---------------------------------------------------------------- inner part
T=$2
finish() {
	[[ -n ${KPID:-} ]] && kill "$KPID" 2>/dev/null
	[[ -n ${RPID:-} ]] && kill "$RPID" 2>/dev/null
	wait 2>/dev/null
	write_counts "$T"
}
trap finish EXIT
# Nothing of the host's /run (docker.sock, containerd.sock, docker's
# plugins dir) is seen or written.
mount -t tmpfs tmpfs /run
E2E_UID=$(id -u "$E2E_USER") E2E_GID=$(id -g "$E2E_USER")
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=docker
export DOCKER_BUILDKIT=0

# ---- inputs: a two-layer docker-archive (busybox, then whiteouts and an
# opaque dir), a build context.
make_archive() {
	local w=$T/in a
	mkdir -p "$w"/{l1,l2}
	mkdir -p "$w/l1"/{bin,etc,tmp,d/sub,o/sub,mvdir/x,gone/deep}
	cp /bin/busybox "$w/l1/bin/busybox"
	for a in $(/bin/busybox --list); do [[ -e $w/l1/bin/$a ]] || ln -s busybox "$w/l1/bin/$a"; done
	printf 'root:x:0:0:root:/root:/bin/sh\nu1000:x:1000:1000::/tmp:/bin/sh\n' >"$w/l1/etc/passwd"
	printf 'root:x:0:\nu1000:x:1000:\n' >"$w/l1/etc/group"
	chmod 1777 "$w/l1/tmp"
	for f in a del ren hl sib; do echo "$f" >"$w/l1/d/$f"; done
	echo b >"$w/l1/d/sub/b"
	echo old >"$w/l1/o/old"; echo old2 >"$w/l1/o/sub/old2"; echo y >"$w/l1/mvdir/x/y"
	echo g >"$w/l1/gone/g"; echo deep >"$w/l1/gone/deep/f"
	mkdir -p "$w/l2"/{d,o,gone}
	: >"$w/l2/d/.wh.sib"; : >"$w/l2/o/.wh..wh..opq"; echo new >"$w/l2/o/new"; echo l2 >"$w/l2/d/l2"
	docker_archive "$T/base.tar" e2e/base:1 "$w/l1" "$w/l2"
	mkdir -p "$T/ctx/cdir"
	echo copied >"$T/ctx/cp.txt"; echo one >"$T/ctx/cdir/one"
	cat >"$T/ctx/Dockerfile" <<-'EOF'
	FROM e2e/base:1
	RUN rm -rf /gone && mkdir /gone && echo again > /gone/g2 && rm /d/a && echo b2 >> /d/b
	COPY cp.txt /cp.txt
	COPY cdir /cdir
	RUN mv /cdir/one /cdir/uno && rm -rf /o && mkdir -p /o/re && chmod 0750 /o/re
	EOF
	chmod -R a+rX "$T/ctx" "$T/base.tar"
}

# The changes made in the container: writes, a delete, renames of a file and
# of a lower dir, a lower dir removed and re-created (the opaque case), an
# append, a chmod, a hard link.
RUN_CHANGES='echo new > /new && rm /d/del && mv /d/ren /d/renamed && mv /mvdir /mvdir2 && rm -rf /gone && mkdir /gone && echo fresh > /gone/fresh && echo app >> /d/a && chmod 600 /d/hl && ln /d/a /d/a.hard && rm -rf /d/sub && mkdir /d/sub && echo c > /d/sub/c'

# listing of a container export (tar on stdin): path, type, mode, owner,
# size, md5 of contents; no times.
export_listing() {
	local x=$1
	rm -rf "$x"; mkdir -p "$x"
	tar --numeric-owner -xpf - -C "$x" 2>/dev/null
	(cd "$x" && find . -mindepth 1 \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o -printf '%p %y %m %U:%G %s %l\n' |
		grep -vE '^\./etc/(hostname|hosts|resolv\.conf) ' | sort
	 find . -type f ! -path './etc/host*' ! -path ./etc/resolv.conf -exec md5sum {} + | awk '{print $2, $1}' | sort)
	rm -rf "$x"
}

# scenario NAME: the same steps on the daemon at $DOCKER_HOST; results
# that must match between daemons go to $T/res-NAME/.
scenario() {
	local n=$1 r=$T/res-$1
	mkdir -p "$r"
	check "$n: docker load of a docker-archive with .wh. layers" dk load -i "$T/base.tar"
	dk image inspect -f '{{.RootFS.Layers}}' e2e/base:1 >"$r/layers" 2>&1
	check "$n: docker run with writes, deletes, renames, a re-created dir" \
		dk run --name c1 --network none e2e/base:1 sh -c "$RUN_CHANGES"
	dk run --rm --network none e2e/base:1 sh -c 'ls -A / /d /o; cat /d/a' >"$r/base-view" 2>&1
	dk diff c1 | sort >"$r/diff" 2>&1
	dk export c1 | export_listing "$T/x-$n" >"$r/export-c1"
	check "$n: docker commit" dk commit c1 e2e/c1:1
	local gone
	gone=$(dk run --rm --network none e2e/c1:1 ls -A /gone 2>&1)
	if [[ $gone == fresh ]]; then pass "$n: a re-created dir shows only what was made in it"; else fail "$n: a re-created dir shows only what was made in it" "ls /gone: $gone"; fi
	dk run --rm --network none e2e/c1:1 sh -c 'cat /new /d/a; ls -A / /d /d/sub /gone; ls -l /d/hl' >"$r/commit-view" 2>&1
	check "$n: docker run -d, then exec into it" dk run -d --name c2 --network none e2e/base:1 sleep 300
	check "$n: docker exec writes in a running container" dk exec c2 sh -c 'echo ex > /ex && rm /d/hl && cat /ex'
	if [[ $n == rootless ]]; then
		# The running container's root is served by our ovlfs.
		local p served=""
		for p in $(pgrep -x ovlfs); do
			[[ $(readlink "/proc/$p/exe") == "$T/bin/ovlfs" ]] && served=$p
		done
		if [[ -n $served ]]; then pass "$n: the container root is served by ovlfs (pid $served)"; else fail "$n: the container root is served by ovlfs" "no ovlfs process runs $T/bin/ovlfs" "$(ps -eo pid,comm,args | grep -v ' \[')"; fi
	fi
	dk exec c2 sh -c 'ls -A / /d' >"$r/exec-view" 2>&1
	dk diff c2 | sort >"$r/diff-c2" 2>&1
	check "$n: docker build (RUN, COPY, RUN)" dk build -q -t e2e/built:1 "$T/ctx"
	dk create --name cb --network none e2e/built:1 >/dev/null 2>&1
	dk export cb | export_listing "$T/x-$n" >"$r/export-built"
	dk rm -f c2 >/dev/null 2>&1
}
dk() { timeout -k 10 180 env DOCKER_CONFIG="$DCFG" DOCKER_HOST="$DOCKER_HOST" $AS "$DOCKER" "$@"; }

# wait_socket SOCK LOG: up to 60 s for a daemon's API.
wait_socket() {
	local i
	for i in $(seq 120); do
		if [[ -S $1 ]] && DOCKER_HOST=unix://$1 DOCKER_CONFIG=$DCFG $AS "$DOCKER" version >/dev/null 2>&1; then return 0; fi
		sleep 0.5
	done
	fail "daemon at $1 did not come up" "see its log" "$(tail -20 "$2")"
	return 1
}

make_archive

# ---- the rootless daemon: ovlfs as fuse-overlayfs
R=$T/rootless
mkdir -p "$R/home" "$R/run" "$R/dcfg"
echo '{}' >"$R/daemon.json"
chown -R "$E2E_UID:$E2E_GID" "$R"
chmod 700 "$R/run"
AS="setpriv --reuid=$E2E_UID --regid=$E2E_GID --init-groups env HOME=$R/home XDG_RUNTIME_DIR=$R/run"
DCFG=$R/dcfg
setpriv --reuid="$E2E_UID" --regid="$E2E_GID" --init-groups env -i HOME="$R/home" XDG_RUNTIME_DIR="$R/run" \
	PATH="$T/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
	rootlesskit --net=host --copy-up=/etc --copy-up=/run --state-dir="$R/run/rootlesskit" \
	dockerd --config-file "$R/daemon.json" --data-root "$R/home/data" --exec-root "$R/run/exec" \
	--pidfile "$R/run/docker.pid" -H "unix://$R/run/docker.sock" --storage-driver fuse-overlayfs \
	--iptables=false --ip-masq=false --ip-forward=false --bridge=none --userland-proxy=false \
	>"$T/dockerd-rootless.log" 2>&1 &
RPID=$!
DOCKER_HOST=unix://$R/run/docker.sock
if wait_socket "$R/run/docker.sock" "$T/dockerd-rootless.log"; then
	driver=$(dk info -f '{{.Driver}} {{.SecurityOptions}}' 2>&1)
	if [[ $driver == "fuse-overlayfs "*rootless* ]]; then pass "rootless: dockerd runs rootless with the fuse-overlayfs driver"; else fail "rootless: dockerd runs rootless with the fuse-overlayfs driver" "docker info: $driver"; fi
	scenario rootless
fi

# ---- the root daemon: the kernel's overlay2, the oracle
K=$T/kernel
mkdir -p "$K/dcfg"
echo '{}' >"$K/daemon.json"
AS=""
DCFG=$K/dcfg
dockerd --config-file "$K/daemon.json" --data-root "$K/data" --exec-root "$K/exec" --pidfile "$K/docker.pid" \
	-H "unix://$K/docker.sock" --storage-driver overlay2 \
	--iptables=false --ip-masq=false --ip-forward=false --bridge=none --userland-proxy=false \
	>"$T/dockerd-kernel.log" 2>&1 &
KPID=$!
DOCKER_HOST=unix://$K/docker.sock
if wait_socket "$K/docker.sock" "$T/dockerd-kernel.log"; then
	scenario kernel
fi

# ---- compare
for f in layers base-view diff export-c1 commit-view exec-view diff-c2 export-built; do
	if [[ -s $T/res-rootless/$f && -s $T/res-kernel/$f ]]; then
		same "compare: $f (rootless ovlfs = kernel overlay2)" "$T/res-rootless/$f" "$T/res-kernel/$f"
	else
		fail "compare: $f (rootless ovlfs = kernel overlay2)" "missing or empty result"
	fi
done

# ---- ovlctl on the rootless Docker store, read-only
store=$R/home/data/fuse-overlayfs
AS="setpriv --reuid=$E2E_UID --regid=$E2E_GID --init-groups env HOME=$R/home XDG_RUNTIME_DIR=$R/run"
DCFG=$R/dcfg
DOCKER_HOST=unix://$R/run/docker.sock
dk stop -t 1 c1 >/dev/null 2>&1
# state DIR: every entry under the Docker data root with type, mode,
# owner, size, mtime and xattrs, and the contents of its regular files.
state() {
	(cd "$1" && find . -printf '%p %y %m %U:%G %s %T@ %C@\n' | sort
	 find . -type f -exec sha256sum {} + | sort -k2
	 getfattr -R -h -d -m - --absolute-names . 2>/dev/null)
}
if [[ -d $store ]]; then
	state "$R/home/data" >"$T/store-before"
	ids=$(ls "$store" | grep -v '^l$' | head -3)
	check "ovlctl ls on the Docker store" "$T/bin/ovlctl" --root "$store" ls
	check "ovlctl images on the Docker store" "$T/bin/ovlctl" --root "$store" images
	check "ovlctl df on the Docker store" "$T/bin/ovlctl" --root "$store" df
	# shellcheck disable=SC2086
	check "ovlctl inspect on the Docker store" "$T/bin/ovlctl" --root "$store" inspect $ids
	check "ovlctl check on the Docker store" "$T/bin/ovlctl" --root "$store" check
	# The container's layer, exported by ovlctl, holds what docker diff says.
	cid=$(dk inspect -f '{{.GraphDriver.Data.UpperDir}}' c1 2>/dev/null | sed 's|/diff$||; s|.*/||')
	if [[ -n $cid ]] && "$T/bin/ovlctl" --root "$store" diff "$cid" >"$T/c1-layer.tar" 2>"$T/c1-layer.err"; then
		got=$(tar -tf "$T/c1-layer.tar" | sed 's|^\./||; s|/$||' | grep -E '^(new|d/del|d/\.wh\.del|d/renamed|gone/fresh|d/a\.hard)$' | sort | tr '\n' ' ')
		if [[ $got == "d/.wh.del d/a.hard d/renamed gone/fresh new " ]]; then pass "ovlctl diff of the container's layer"; else fail "ovlctl diff of the container's layer" "entries: $got" "$(tar -tvf "$T/c1-layer.tar" | head -30)"; fi
	else
		fail "ovlctl diff of the container's layer" "layer ${cid:-not found}" "$(cat "$T/c1-layer.err" 2>/dev/null)"
	fi
	used=$("$T/bin/ovlctl" --root "$store" ls 2>&1)
	if grep -q "e2e/base:1" <<<"$used"; then pass "ovlctl ls names the images that use the layers"; else fail "ovlctl ls names the images that use the layers" "no e2e/base:1" "$used"; fi
	state "$R/home/data" >"$T/store-after"
	same "ovlctl changed no byte of the Docker data root" "$T/store-before" "$T/store-after"
else
	fail "ovlctl on the Docker store" "no store at $store"
fi
