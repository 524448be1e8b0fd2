#!/usr/bin/env bash
# Demo: what an overlay does, and that ovlfs writes the kernel's format.
# Two lower layers are merged by ovlfs; a write, deletes and renames go
# through the mount; the upper layer then holds a copied-up file, a whiteout,
# an opaque directory and a redirect; the kernel's overlayfs mounts the same
# layers and shows the same tree. Exits 1 if the two trees differ.
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
	if mountpoint -q "$mnt" 2>/dev/null; then
		fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	fi
	rm -rf "$top"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
# tree prints every path under $1 with its type and, for files, content.
tree() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while IFS= read -r p; do
		if [[ -L $p ]]; then t="symlink -> $(readlink "$p")"
		elif [[ -d $p ]]; then t=dir
		elif [[ -f $p ]]; then t="file: $(head -c 40 "$p" | tr '\n' ' ')"
		elif [[ -c $p ]]; then t="char device $(stat -c '%t:%T' "$p")"
		else t=other; fi
		printf '  %-14s %s\n' "${p#./}" "$t"
	done)
}

root=no
[[ $(id -u) -eq 0 ]] && root=yes
ns=trusted
[[ $root == yes ]] || ns=user

step "two lower layers: lower2 at the bottom, lower1 on top (a whiteout hides b, o/ is opaque)"
mkdir -p "$l1" "$l2" "$up" "$wk" "$mnt"
echo a >"$l2/a"
echo b >"$l2/b"
mkdir -p "$l2/d" "$l2/o" "$l2/gone"
echo x >"$l2/d/x"
echo y >"$l2/d/y"
echo old >"$l2/o/old"
echo g >"$l2/gone/g"
echo c >"$l1/c"
mknod "$l1/b" c 0 0
mkdir -p "$l1/o" "$l1/d"
setfattr -n "$ns.overlay.opaque" -v y "$l1/o"
echo new >"$l1/o/new"
echo z >"$l1/d/z"
echo "lower1:"; tree "$l1"
echo "lower2:"; tree "$l2"

opts="lowerdir=$l1:$l2,upperdir=$up,workdir=$wk"
[[ $root == yes ]] && opts+=",redirect_dir=on"
step "mount them with ovlfs: $bin -o $opts MNT"
"$bin" -o "$opts" "$mnt"
echo "the merged tree (b hidden, o/ without old, d/ merged from both layers):"
tree "$mnt"

step "change it through the mount"
echo "  append to a (a lower file: copied up first)";           echo more >>"$mnt/a"
echo "  create n";                                              echo n >"$mnt/n"
echo "  delete d/x (a lower file: leaves a whiteout)";          rm "$mnt/d/x"
echo "  remove gone/ and make it again (an opaque directory)";  rm -r "$mnt/gone"; mkdir "$mnt/gone"; echo fresh >"$mnt/gone/f"
echo "  rename d/ to e/ (a merged directory: a redirect)";      mv "$mnt/d" "$mnt/e"
ovlfs_view=$(tree "$mnt")
echo "the merged tree now:"
echo "$ovlfs_view"
fusermount3 -u "$mnt"

step "what landed in the upper layer (only the changes, in the kernel's format)"
tree "$up"
echo "overlay xattrs:"
(cd "$up" && getfattr -R -h -d -m "^$ns\.overlay\." --absolute-names . 2>/dev/null |
	sed -n "s|^# file: \.$|  (the upper root)|p; s|^# file: \./|  |p; s|^$ns\.overlay\.|      $ns.overlay.|p")
echo "(char device 0:0 = whiteout; opaque=\"y\" = the directory hides what is below it;"
echo " redirect = where the layers below keep the renamed directory; origin, impure = copy-up bookkeeping)"

if [[ $root != yes ]]; then
	echo; echo "not root: the kernel overlay half is skipped"
	exit 0
fi
if ! grep -qw overlay /proc/filesystems && ! modprobe overlay 2>/dev/null; then
	echo; echo "no overlay in /proc/filesystems: the kernel overlay half is skipped"
	exit 0
fi

step "mount the same lower, upper and work dirs with the kernel: mount -t overlay -o ...,redirect_dir=on MNT"
mount -t overlay overlay -o "lowerdir=$l1:$l2,upperdir=$up,workdir=$wk,redirect_dir=on" "$mnt"
kernel_view=$(tree "$mnt")
echo "$kernel_view"
umount "$mnt"

step "compare"
if [[ $ovlfs_view == "$kernel_view" ]]; then
	echo "the kernel shows exactly the tree ovlfs showed"
else
	echo "the trees differ (< ovlfs, > kernel):"
	diff <(echo "$ovlfs_view") <(echo "$kernel_view") || true
	exit 1
fi
