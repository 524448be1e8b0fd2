#!/usr/bin/env bash
# Demo: mount a small layer set with ovlfs exactly as Podman does, list it, then
# mount the same layers with the kernel's overlayfs and compare the two views.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$repo/bin/ovlfs
[[ -x $bin ]] || { echo "demo: $bin is missing: run 'make build'" >&2; exit 1; }

# A private mount namespace: nothing leaks into the host's mount table.
if [[ -z ${OVLFS_DEMO_NS:-} && $(id -u) -eq 0 ]] && command -v unshare >/dev/null; then
	export OVLFS_DEMO_NS=1
	exec unshare -m --propagation private bash "$0" "$@"
fi

top=$(mktemp -d "${TMPDIR:-/tmp}/ovlfs-demo.XXXX")
l1=$top/lower1 l2=$top/lower2 up=$top/upper wk=$top/work mnt=$top/mnt

cleanup() {
	for m in "$mnt"; do
		if mountpoint -q "$m" 2>/dev/null; then
			fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		fi
	done
}
trap cleanup EXIT

mkdir -p "$l1" "$l2" "$up" "$wk" "$mnt"
# lower2, the bottom layer.
echo a >"$l2/a"
echo b >"$l2/b"
mkdir -p "$l2/d" "$l2/o"
echo x >"$l2/d/x"
echo y >"$l2/d/y"
echo old >"$l2/o/old"
# lower1, on top: a new file, a whiteout hiding b, an opaque o/, one more in d/.
echo c >"$l1/c"
mknod "$l1/b" c 0 0
mkdir -p "$l1/o" "$l1/d"
# Root uses the kernel's default trusted.* format, everybody else userxattr.
ns=trusted
[[ $(id -u) -eq 0 ]] || ns=user
setfattr -n "$ns.overlay.opaque" -v y "$l1/o"
echo new >"$l1/o/new"
echo z >"$l1/d/z"

opts="lowerdir=$l1:$l2,upperdir=$up,workdir=$wk"

# listing prints every path under $1 with its type and, for files, content.
listing() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r p; do
		if [[ -L $p ]]; then t=symlink
		elif [[ -d $p ]]; then t=dir
		elif [[ -f $p ]]; then t="file $(head -c 40 "$p")"
		elif [[ -c $p ]]; then t=chardev
		else t=other; fi
		printf '%-12s %s\n' "${p#./}" "$t"
	done)
}

echo "== ovlfs: $bin -o $opts $mnt"
"$bin" -o "$opts" "$mnt"
ovlfs_view=$(listing "$mnt")
echo "$ovlfs_view"
fusermount3 -u "$mnt"

kernel=yes
if [[ $(id -u) -ne 0 ]]; then
	kernel="no (not root)"
elif ! grep -qw overlay /proc/filesystems && ! modprobe overlay 2>/dev/null; then
	kernel="no (no overlay in /proc/filesystems)"
fi
if [[ $kernel == yes ]]; then
	# The same layers, upper and work: the kernel must see them as ovlfs left them.
	echo
	echo "== kernel: mount -t overlay overlay -o $opts $mnt"
	if err=$(mount -t overlay overlay -o "$opts" "$mnt" 2>&1); then
		kernel_view=$(listing "$mnt")
		echo "$kernel_view"
		umount "$mnt"
		echo
		if [[ $ovlfs_view == "$kernel_view" ]]; then
			echo "views are identical"
		else
			echo "views differ (< ovlfs, > kernel):"
			diff <(echo "$ovlfs_view") <(echo "$kernel_view") || true
			echo "layers are in $top"
			exit 1
		fi
	else
		kernel="no (mount failed: $err)"
	fi
fi
if [[ $kernel != yes ]]; then
	echo "kernel overlay not available: $kernel; skipping the comparison"
fi
echo "layers are in $top (lower1 lower2 upper work mnt)"
