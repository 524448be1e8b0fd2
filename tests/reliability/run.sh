#!/bin/bash
# make reliability: faults, hostile layers, bad input, load, memory and fds.
# Runs the TestRel* real-mount tests of ./tests and the fuzz
# targets for a bounded time, then prints one table and the last line
# "reliability: N passed, M failed" (exit status 1 when M > 0).
#
#   RELIABILITY_LONG=1   long form: more kill points, bigger load, 10-minute soak
#   FUZZTIME=10s         time per fuzz target (60s in the long form)
#   REL_SEED=N           seed of the kill-point sequence (printed in the log)
#
# Needs root and /dev/fuse; runs in a private mount namespace (it re-executes
# itself under `unshare -m --propagation private`), so every mount it makes
# is gone when it ends. Installs fio and stress-ng with apt-get if missing.
set -u
cd "$(dirname "$0")/../.."
export PATH=/usr/local/go/bin:$PATH

if [ "$(id -u)" -ne 0 ]; then
	echo "reliability: needs root (real FUSE and overlay mounts, tmpfs, setpriv, fanotify)" >&2
	echo "reliability: 0 passed, 1 failed"
	exit 1
fi
if [ -z "${REL_IN_NS:-}" ]; then
	missing=""
	command -v fio >/dev/null 2>&1 || missing="$missing fio"
	command -v stress-ng >/dev/null 2>&1 || missing="$missing stress-ng"
	command -v setfattr >/dev/null 2>&1 || missing="$missing attr"
	command -v fusermount3 >/dev/null 2>&1 || missing="$missing fuse3"
	if [ -n "$missing" ]; then
		echo "reliability: apt-get install -y$missing"
		apt-get install -y $missing >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y $missing >/dev/null; } ||
			echo "reliability: could not install$missing (the checks that need them will fail)" >&2
	fi
	REL_IN_NS=1 exec unshare -m --propagation private "$0" "$@"
fi

START=$(date +%s)
LONG=0
case "${RELIABILITY_LONG:-0}" in ""|0|no|false) ;; *) LONG=1 ;; esac
if [ "$LONG" = 1 ]; then
	export REL_LONG=1
	FUZZTIME=${FUZZTIME:-60s}
	TIMEOUT=90m
	FORM=long
else
	unset REL_LONG
	FUZZTIME=${FUZZTIME:-10s}
	TIMEOUT=25m
	FORM=short
fi
OUT=$(mktemp -d /tmp/ovlfs-reliability.XXXXXX)
export REL_METRICS=$OUT/metrics.tsv
: >"$REL_METRICS"
LOG=$OUT/tests.log
echo "reliability ($FORM form): logs in $OUT (removed after a clean run unless RELIABILITY_KEEP=1)"

go build -o bin/ovlfs ./cmd/ovlfs || { echo "reliability: 0 passed, 1 failed (build)"; exit 1; }

# 1. The real-mount checks.
echo "reliability: TestRel* real-mount tests (crash, hostile, ENOSPC, permissions, bad input, load, mounts$([ $LONG = 1 ] && echo ', soak'))..."
go test -count=1 -v -timeout "$TIMEOUT" -run '^TestRel' ./tests >"$LOG" 2>&1
GOTEST=$?

# 2. Fuzz targets, each for FUZZTIME.
FUZZ="./cmd/ovlfs:FuzzParseOptions ./whiteout:FuzzClassifyOpaque ./whiteout:FuzzParseRedirect ./whiteout:FuzzEscapeUnescape ./layout:FuzzApplyDiff"
for ft in $FUZZ; do
	pkg=${ft%%:*} fn=${ft#*:}
	echo "reliability: fuzz $fn ($FUZZTIME)..."
	flog=$OUT/fuzz-$fn.log
	go test -run '^$' -fuzz "^$fn\$" -fuzztime "$FUZZTIME" "$pkg" >"$flog" 2>&1
	rc=$?
	execs=$(grep -o 'execs: [0-9]*' "$flog" | tail -1 | awk '{print $2}')
	execs=${execs:-0}
	if [ $rc -eq 0 ]; then
		printf 'fuzz\tfuzz %s (%s)\t%s\t%s\t0\t%s\n' "$fn" "$FUZZTIME" "$execs" "$execs" "inputs run, no failure" >>"$REL_METRICS"
	else
		crash=$(grep -m1 -o 'testdata/fuzz/[^ ]*' "$flog")
		printf 'fuzz\tfuzz %s (%s)\t%s\t0\t1\t%s\n' "$fn" "$FUZZTIME" "$execs" "FAILED: $(grep -m1 -E 'Error|panic|--- FAIL' "$flog" | cut -c1-150) ${crash}" >>"$REL_METRICS"
	fi
done

# 3. The table. A row fails when something was lost/escaped or not
# everything tried was ok; a failed test without a failed row adds one.
declare -A testfail
for t in $(grep -E '^--- FAIL: TestRel' "$LOG" | awk '{print $3}'); do testfail[$t]=1; done
for t in $(grep -E '^--- (PASS|SKIP): TestRel' "$LOG" | awk '{print $3}'); do :; done
pass=0 fail=0
declare -A rowfail
fmt='%-58s %9s %9s %6s  %-4s  %s\n'
echo
printf "$fmt" "check" "tried" "ok" "lost" "" "figures"
printf '%s\n' "$(printf '%.0s-' $(seq 1 130))"
while IFS=$'\t' read -r test row tried ok lost note; do
	[ -n "$row" ] || continue
	res=PASS
	if [ "$lost" != 0 ] || [ "$ok" != "$tried" ]; then
		res=FAIL
		rowfail[$test]=1
	fi
	if [ $res = PASS ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
	printf "$fmt" "${row:0:58}" "$tried" "$ok" "$lost" "$res" "$note"
done <"$REL_METRICS"
for t in "${!testfail[@]}"; do
	if [ -z "${rowfail[$t]:-}" ]; then
		fail=$((fail + 1))
		printf "$fmt" "$t (see the log)" "-" "-" "-" "FAIL" "failed outside its counted checks"
	fi
done
for t in $(grep -E '^--- SKIP: TestRel' "$LOG" | awk '{print $3}'); do
	[ "$t" = TestRelWorker ] && continue
	[ "$t" = TestRelSoak ] && [ $LONG = 0 ] && continue
	fail=$((fail + 1))
	printf "$fmt" "$t" "-" "-" "-" "SKIP" "$(grep -A1 -E "^--- SKIP: $t " "$LOG" | tail -1 | sed 's/^ *//' | cut -c1-100)"
done
if [ $GOTEST -ne 0 ] && [ ${#testfail[@]} -eq 0 ]; then
	fail=$((fail + 1))
	printf "$fmt" "go test ./tests (build, panic or timeout)" "-" "-" "-" "FAIL" "exit $GOTEST; see $LOG"
fi
if [ $fail -gt 0 ]; then
	echo
	echo "first errors (all of them in $LOG):"
	grep -E '^\s+[a-z_]+_test\.go:[0-9]+: ' "$LOG" | grep -v ': REL ' | grep -vE 'seed [0-9]+|outcomes:|mount refused|as nobody, "setfattr -n user|ovlfs \[' | cut -c1-400 | head -25
fi
echo
echo "time: $(( $(date +%s) - START ))s ($FORM form)"
if [ $fail -eq 0 ] && [ "${RELIABILITY_KEEP:-}" != 1 ]; then
	rm -rf "$OUT"
else
	echo "logs kept in $OUT"
fi
echo "reliability: $pass passed, $fail failed"
[ $fail -eq 0 ]
