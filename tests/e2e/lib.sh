# Shared by tests/e2e/e2e.sh and tests/e2e/docker.sh (sourced, not run):
# counting, the packages they install, the rootless user, and the last look
# at the host for leftovers. NAME is the prefix of every summary line.

PASS=0 FAIL=0
FAILED=()
pass() { PASS=$((PASS + 1)); echo "ok   $1"; }
# fail NAME WHY [OUTPUT]
fail() {
	FAIL=$((FAIL + 1)); FAILED+=("$1")
	echo "FAIL $1: $2"
	if [[ -n ${3:-} ]]; then printf '%s\n' "$3" | tail -n 40 | sed 's/^/     | /'; fi
}

# die WHY: the one line, the summary, exit 1 (before any test ran).
die() { echo "$NAME: $1" >&2; echo "$NAME: 0 passed, 1 failed"; exit 1; }

# install_missing PKG...: apt-get install what dpkg does not have (extra
# apt-get flags in APT_FLAGS).
install_missing() {
	local p missing="" log
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	[[ -z $missing ]] && return 0
	echo "$NAME: apt-get install -y$missing"
	export DEBIAN_FRONTEND=noninteractive
	log=$(mktemp)
	# shellcheck disable=SC2086
	apt-get install -y -q ${APT_FLAGS:-} $missing >"$log" 2>&1 ||
		{ apt-get update -q >>"$log" 2>&1 && apt-get install -y -q ${APT_FLAGS:-} $missing >>"$log" 2>&1; } ||
		{ tail -20 "$log"; rm -f "$log"; die "apt-get install failed"; }
	rm -f "$log"
}

# ensure_user USER: the rootless user, with a subuid and subgid range of
# 65536 after every range in use.
ensure_user() {
	local f top flag
	if ! id -u "$1" >/dev/null 2>&1; then
		echo "$NAME: creating user $1"
		useradd -M -d /nonexistent -s /usr/sbin/nologin "$1"
	fi
	for f in /etc/subuid /etc/subgid; do
		if ! grep -q "^$1:" "$f" 2>/dev/null; then
			top=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' /etc/subuid /etc/subgid 2>/dev/null)
			flag=--add-subuids; [[ $f == /etc/subgid ]] && flag=--add-subgids
			usermod "$flag" "$top-$((top + 65535))" "$1"
		fi
	done
}

# host_checks T: after the inner run, nothing is mounted under T and no
# process runs a binary from T/bin.
host_checks() {
	local left procs="" p
	left=$(grep -h " $1" /proc/[0-9]*/mountinfo 2>/dev/null | sort -u)
	if [[ -z $left ]]; then pass "host: no mount under $1 left"; else fail "host: no mount under $1 left" "mounts left" "$left"; fi
	for p in /proc/[0-9]*; do
		case $(readlink "$p/exe" 2>/dev/null) in "$1/bin/"*) procs="$procs ${p#/proc/}" ;; esac
	done
	if [[ -z $procs ]]; then pass "host: no process of the run left"; else fail "host: no process of the run left" "pids$procs"; fi
}

# write_counts T: the inner run's counts for the outer one, and the list of
# what failed.
write_counts() {
	echo "$PASS $FAIL" >"$1/counts"
	if ((FAIL)); then
		echo "failed tests:"
		printf '  %s\n' "${FAILED[@]}"
	fi
}

# finish_outer T RC START: the outer run's end: the inner counts, the host
# checks, outer_cleanup if the script has one, the temp dir removed (kept
# with OVLFS_E2E_KEEP=1), the summary line; exits 1 on any failure.
finish_outer() {
	read -r PASS FAIL <"$1/counts" 2>/dev/null || { PASS=0; FAIL=1; echo "FAIL inner run: exit $2, no counts"; }
	host_checks "$1"
	if declare -F outer_cleanup >/dev/null; then outer_cleanup; fi
	if [[ ${OVLFS_E2E_KEEP:-} == 1 ]]; then echo "$NAME: kept $1"; else rm -rf "$1"; fi
	echo "$NAME: took $((SECONDS - $3))s"
	echo "$NAME: $PASS passed, $FAIL failed"
	[[ $FAIL -eq 0 && $2 -eq 0 ]]
	exit $?
}

# docker_archive OUT TAG DIR...: a docker-archive (docker save's format) at
# OUT of an image TAG whose layers, bottom first, are the trees DIR... taken
# as root-owned tars (their .wh. files are the layers' whiteouts).
docker_archive() {
	local out=$1 tag=$2 arch d sha cfg diffids="" layers=""
	shift 2
	arch=$(mktemp -d "$out.XXXXXX")
	for d in "$@"; do
		(cd "$d" && tar --numeric-owner --owner=0 --group=0 -cf "$arch/layer.tar" $(ls -A))
		sha=$(sha256sum "$arch/layer.tar" | cut -d' ' -f1)
		mkdir -p "$arch/$sha"; mv "$arch/layer.tar" "$arch/$sha/layer.tar"
		diffids="$diffids${diffids:+,}\"sha256:$sha\""; layers="$layers${layers:+,}\"$sha/layer.tar\""
	done
	printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diffids" >"$arch/cfg"
	cfg=$(sha256sum "$arch/cfg" | cut -d' ' -f1)
	mv "$arch/cfg" "$arch/$cfg.json"
	printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":[%s]}]' "$cfg" "$tag" "$layers" >"$arch/manifest.json"
	(cd "$arch" && tar -cf "$out" $(ls -A))
	rm -rf "$arch"
}
