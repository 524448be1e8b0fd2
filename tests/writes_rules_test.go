package tests

// One test per writing rule of docs/format.md ("What ovlfs writes"): ovlfs is mounted,
// changed through the mount, and the upper layer is checked on disk.

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// wrLayers makes lower (with the files that fill makes), upper and work dirs.
func wrLayers(t *testing.T, fill func(lower string)) (lower, upper, work string) {
	t.Helper()
	requireMount(t)
	dir := t.TempDir()
	lower, upper, work = filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{lower, upper, work} {
		mkdirs(t, d)
	}
	if fill != nil {
		fill(lower)
	}
	return
}

// sideBySide makes the same layers twice (fill makes the lower), mounts one
// copy with ovlfs and the other with the kernel overlay, and returns what
// run saw on each (run gets the lower dir and the mountpoint).
func sideBySide[T any](t *testing.T, fill func(lower string), run func(lower, mnt string) T) (ovlfs, kernel T) {
	t.Helper()
	l, u, w := wrLayers(t, fill)
	ovlfs = run(l, mountOvlfs(t, []string{l}, u, w))
	l, u, w = wrLayers(t, fill)
	kernel = run(l, mountKernel(t, []string{l}, u, w))
	return ovlfs, kernel
}

func wrMust(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wrLstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

// wrIsWhiteout reports whether p on disk is a kernel whiteout (char 0/0).
func wrIsWhiteout(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func wrExists(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil
}

// wrCheckNoJunk fails when the upper holds `.wh.*` names or user.fuseoverlayfs.* xattrs.
func wrCheckNoJunk(t *testing.T, upper string) {
	t.Helper()
	if bad := wrUpperJunk(upper); len(bad) > 0 {
		t.Errorf("upper %s holds fuse-overlayfs-format junk: %q", upper, bad)
	}
}

func wrSha(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestRuleDeleteLowerFileWhiteout(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "f"), []byte("lower"), 0o644)
		writeFile(t, filepath.Join(l, "d/g"), []byte("lower"), 0o644)
	})
	m := mountOvlfs(t, []string{l}, u, w)
	wrMust(t, "rm f", os.Remove(filepath.Join(m, "f")))
	wrMust(t, "rm d/g", os.Remove(filepath.Join(m, "d/g")))
	wrMust(t, "rmdir d", os.Remove(filepath.Join(m, "d")))
	for _, p := range []string{"f", "d"} {
		if !wrIsWhiteout(filepath.Join(u, p)) {
			t.Errorf("upper/%s is not a char 0/0 whiteout after deleting the lower entry", p)
		}
	}
	// Like the kernel's, the whiteouts are hard links of one inode.
	var f, d unix.Stat_t
	if unix.Lstat(filepath.Join(u, "f"), &f) == nil && unix.Lstat(filepath.Join(u, "d"), &d) == nil && f.Ino != d.Ino {
		t.Errorf("upper/f (inode %d) and upper/d (inode %d): not links of one shared whiteout", f.Ino, d.Ino)
	}
	checkHidden(t, m, "f", "d/g", "d")
	wrCheckNoJunk(t, u)
	unmountFuse(t, m)
	k := mountKernel(t, []string{l}, u, w)
	checkHidden(t, k, "f", "d/g", "d")
}

func TestRuleDeleteUpperOnlyNoWhiteout(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) { mkdirs(t, filepath.Join(l, "d")) })
	m := mountOvlfs(t, []string{l}, u, w)
	for _, p := range []string{"new", "d/new"} {
		wrMust(t, "create "+p, os.WriteFile(filepath.Join(m, p), []byte("x"), 0o644))
		wrMust(t, "rm "+p, os.Remove(filepath.Join(m, p)))
		if wrExists(filepath.Join(u, p)) {
			t.Errorf("upper/%s still exists (a whiteout?) after deleting an upper-only file", p)
		}
	}
	wrCheckNoJunk(t, u)
}

func TestRuleNoWhiteoutInUpperOnlyOrOpaqueDir(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "od/old"), []byte("lower"), 0o644)
	})
	m := mountOvlfs(t, []string{l}, u, w)
	j := filepath.Join
	// A dir that exists only in upper.
	wrMust(t, "mkdir nd", os.Mkdir(j(m, "nd"), 0o755))
	wrMust(t, "create nd/x", os.WriteFile(j(m, "nd/x"), []byte("x"), 0o644))
	wrMust(t, "mkdir nd/sub", os.Mkdir(j(m, "nd/sub"), 0o755))
	wrMust(t, "rm nd/x", os.Remove(j(m, "nd/x")))
	wrMust(t, "rmdir nd/sub", os.Remove(j(m, "nd/sub")))
	// An opaque dir made over a deleted lower one.
	wrMust(t, "rm -r od", os.RemoveAll(j(m, "od")))
	wrMust(t, "mkdir od", os.Mkdir(j(m, "od"), 0o755))
	wrMust(t, "create od/old", os.WriteFile(j(m, "od/old"), []byte("new"), 0o644))
	wrMust(t, "rm od/old", os.Remove(j(m, "od/old")))
	for _, d := range []string{"nd", "od"} {
		names, err := readdirNames(j(u, d))
		if err != nil {
			t.Fatal(err)
		}
		if len(names) != 0 {
			t.Errorf("upper/%s holds %q; a delete in a dir with nothing below must leave nothing", d, names)
		}
	}
	wrCheckNoJunk(t, u)
}

func TestRuleRmdirMkdirOpaque(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "d/a"), []byte("a"), 0o644)
		writeFile(t, filepath.Join(l, "d/sub/b"), []byte("b"), 0o644)
		mkdirs(t, filepath.Join(l, "e"))
	})
	m := mountOvlfs(t, []string{l}, u, w)
	j := filepath.Join
	wrMust(t, "rm -r d", os.RemoveAll(j(m, "d")))
	wrMust(t, "mkdir d", os.Mkdir(j(m, "d"), 0o755))
	wrMust(t, "rmdir e", os.Remove(j(m, "e")))
	wrMust(t, "mkdir e", os.Mkdir(j(m, "e"), 0o700))
	for _, d := range []string{"d", "e"} {
		v, err := getXattr(j(u, d), "trusted.overlay.opaque")
		if err != nil || string(v) != "y" {
			t.Errorf("upper/%s: trusted.overlay.opaque = %q, %v; want \"y\"", d, v, err)
		}
		if names, _ := readdirNames(j(m, d)); len(names) != 0 {
			t.Errorf("%s through the mount lists %q; want empty", d, names)
		}
	}
	unmountFuse(t, m)
	k := mountKernel(t, []string{l}, u, w)
	if names, _ := readdirNames(j(k, "d")); len(names) != 0 {
		t.Errorf("the kernel lists %q in the re-made d; want empty", names)
	}
	wrCheckNoJunk(t, u)
}

func TestRuleRenameLowerFile(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "f"), []byte("lower f"), 0o640)
		mkdirs(t, filepath.Join(l, "d"))
	})
	m := mountOvlfs(t, []string{l}, u, w)
	j := filepath.Join
	wrMust(t, "mv f d/g", os.Rename(j(m, "f"), j(m, "d/g")))
	if !wrIsWhiteout(j(u, "f")) {
		t.Errorf("upper/f is not a whiteout after renaming the lower file away")
	}
	if b, err := os.ReadFile(j(u, "d/g")); err != nil || string(b) != "lower f" {
		t.Errorf("upper/d/g = %q, %v; want the copied-up file", b, err)
	}
	checkHidden(t, m, "f")
	wrCheckNoJunk(t, u)
}

func TestRuleRenameLowerDirRedirect(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "p1/dir/a"), []byte("a"), 0o644)
		writeFile(t, filepath.Join(l, "p1/dir/sub/b"), []byte("b"), 0o600)
		writeFile(t, filepath.Join(l, "same/x"), []byte("x"), 0o644)
		mkdirs(t, filepath.Join(l, "p2"))
	})
	m := mountOvlfs(t, []string{l}, u, w)
	j := filepath.Join
	wrMust(t, "mv p1/dir p2/moved", os.Rename(j(m, "p1/dir"), j(m, "p2/moved")))
	wrMust(t, "mv same same2", os.Rename(j(m, "same"), j(m, "same2")))
	for p, want := range map[string][]string{"p2/moved": {"/p1/dir"}, "same2": {"/same", "same"}} {
		v, err := getXattr(j(u, p), "trusted.overlay.redirect")
		if err != nil || !strings.Contains(strings.Join(want, "\x00"), string(v)) || len(v) == 0 {
			t.Errorf("upper/%s: trusted.overlay.redirect = %q, %v; want one of %q", p, v, err, want)
		}
	}
	for _, p := range []string{"p1/dir", "same"} {
		if !wrIsWhiteout(j(u, p)) {
			t.Errorf("upper/%s is not a whiteout after the rename", p)
		}
	}
	want := snapshot(t, m)
	unmountFuse(t, m)
	// The kernel with default options (redirect_dir follow here) must show the moved tree.
	k := mountKernel(t, []string{l}, u, w)
	requireSameTree(t, "kernel on ovlfs's upper after dir renames", snapshot(t, k), want)
	if b, err := os.ReadFile(j(k, "p2/moved/sub/b")); err != nil || string(b) != "b" {
		t.Errorf("kernel: p2/moved/sub/b = %q, %v; want the lower content", b, err)
	}
	checkHidden(t, k, "p1/dir", "same")
	wrCheckNoJunk(t, u)
}

func TestRuleHardLinkLower(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "f"), []byte("lower f"), 0o644)
	})
	m := mountOvlfs(t, []string{l}, u, w)
	j := filepath.Join
	wrMust(t, "ln f g", os.Link(j(m, "f"), j(m, "g")))
	sf, sg := wrLstat(t, j(u, "f")), wrLstat(t, j(u, "g"))
	if sf.Ino != sg.Ino || sf.Nlink != 2 {
		t.Errorf("upper f ino %d nlink %d, g ino %d nlink %d; want one inode with st_nlink 2", sf.Ino, sf.Nlink, sg.Ino, sg.Nlink)
	}
	mf, mg := wrLstat(t, j(m, "f")), wrLstat(t, j(m, "g"))
	if mf.Ino != mg.Ino || mf.Nlink != 2 {
		t.Errorf("through the mount: f ino %d nlink %d, g ino %d nlink %d; want one inode, st_nlink 2", mf.Ino, mf.Nlink, mg.Ino, mg.Nlink)
	}
	wrCheckNoJunk(t, u)
}

func TestRuleCopyUpPreserves(t *testing.T) {
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)
	l, u, w := wrLayers(t, func(l string) {
		j := filepath.Join
		writeFile(t, j(l, "d/suid"), []byte("suid"), 0o644)
		chown(t, j(l, "d/suid"), 1000, 1001)
		chmod(t, j(l, "d/suid"), 0o4755)
		writeFile(t, j(l, "d/sgid"), []byte("sgid"), 0o644)
		chown(t, j(l, "d/sgid"), 1002, 1003)
		chmod(t, j(l, "d/sgid"), 0o2751)
		setXattr(t, j(l, "d/suid"), "user.keep", []byte("kept value"))
		// 64 MiB sparse with 4 KiB of data in the middle.
		f, err := os.Create(j(l, "d/sparse"))
		wrMust(t, "create sparse", err)
		_, err = f.WriteAt(bytes.Repeat([]byte{0xab}, 4096), 32<<20)
		wrMust(t, "write sparse", err)
		wrMust(t, "truncate sparse", f.Truncate(64<<20))
		f.Close()
		mkFifo(t, j(l, "d/fifo"), 0o640)
		chown(t, j(l, "d/fifo"), 1000, 1000)
		mkDevice(t, j(l, "d/null"), unix.S_IFCHR, 1, 3)
		for _, p := range []string{"d/suid", "d/sgid", "d/sparse", "d/fifo", "d/null"} {
			wrMust(t, "utimes", unix.UtimesNanoAt(unix.AT_FDCWD, j(l, p), []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW))
		}
		chown(t, j(l, "d"), 1000, 1000)
		chmod(t, j(l, "d"), 0o2770)
		setXattr(t, j(l, "d"), "user.dirx", []byte("dir value"))
	})
	j := filepath.Join
	var lowerSt = map[string]unix.Stat_t{}
	for _, p := range []string{"d", "d/suid", "d/sgid", "d/sparse", "d/fifo", "d/null"} {
		lowerSt[p] = wrLstat(t, j(l, p))
	}
	m := mountOvlfs(t, []string{l}, u, w)
	// Trigger copy-up without changing what is checked.
	wrMust(t, "setxattr suid", unix.Lsetxattr(j(m, "d/suid"), "user.new", []byte("1"), 0))
	wrMust(t, "setxattr sgid", unix.Lsetxattr(j(m, "d/sgid"), "user.new", []byte("1"), 0))
	wrMust(t, "setxattr sparse", unix.Lsetxattr(j(m, "d/sparse"), "user.new", []byte("1"), 0))
	wrMust(t, "chmod fifo (same mode)", unix.Chmod(j(m, "d/fifo"), 0o640))
	wrMust(t, "chmod null (same mode)", unix.Chmod(j(m, "d/null"), 0o644))
	for p, ls := range lowerSt {
		us := wrLstat(t, j(u, p))
		if us.Mode != ls.Mode || us.Uid != ls.Uid || us.Gid != ls.Gid {
			t.Errorf("upper/%s: mode %o owner %d:%d; lower has %o %d:%d", p, us.Mode, us.Uid, us.Gid, ls.Mode, ls.Uid, ls.Gid)
		}
		if us.Rdev != ls.Rdev {
			t.Errorf("upper/%s: rdev %d, lower %d", p, us.Rdev, ls.Rdev)
		}
		if p != "d" && us.Mtim != ls.Mtim {
			t.Errorf("upper/%s: mtime %v, lower %v", p, time.Unix(us.Mtim.Unix()), time.Unix(ls.Mtim.Unix()))
		}
	}
	for p, x := range map[string]string{"d/suid": "user.keep", "d": "user.dirx"} {
		if v, err := getXattr(j(u, p), x); err != nil {
			t.Errorf("upper/%s lost %s: %v", p, x, err)
		} else if len(v) == 0 {
			t.Errorf("upper/%s: %s is empty", p, x)
		}
	}
	if st := wrLstat(t, j(u, "d/sparse")); st.Size != 64<<20 || st.Blocks*512 > 1<<20 {
		t.Errorf("upper/d/sparse: size %d, %d bytes allocated; want 64 MiB with few blocks (holes kept)", st.Size, st.Blocks*512)
	}
	if wrSha(t, j(u, "d/sparse")) != wrSha(t, j(l, "d/sparse")) {
		t.Errorf("upper/d/sparse content differs from the lower file")
	}
	wrCheckNoJunk(t, u)
}

func TestRuleOTruncNoCopy(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "big"), bytes.Repeat([]byte("0123456789abcdef"), 4<<20), 0o640) // 64 MiB
		chown(t, filepath.Join(l, "big"), 1000, 1000)
		chmod(t, filepath.Join(l, "big"), 0o640)
	})
	before := wrSha(t, filepath.Join(l, "big"))
	m := mountOvlfs(t, []string{l}, u, w)
	fd, err := unix.Open(filepath.Join(m, "big"), unix.O_WRONLY|unix.O_TRUNC, 0)
	wrMust(t, "open O_TRUNC", err)
	us := wrLstat(t, filepath.Join(u, "big"))
	unix.Close(fd)
	if us.Size != 0 || us.Blocks != 0 {
		t.Errorf("upper/big after open(O_TRUNC): size %d, %d blocks; want an empty file", us.Size, us.Blocks)
	}
	if us.Uid != 1000 || us.Mode&0o7777 != 0o640 {
		t.Errorf("upper/big: owner %d mode %o; want the lower's 1000, 0640", us.Uid, us.Mode&0o7777)
	}
	if wrSha(t, filepath.Join(l, "big")) != before {
		t.Errorf("the lower file changed")
	}
	wrCheckNoJunk(t, u)
}

func TestRuleTrustedOverlayEscaped(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "f"), []byte("f"), 0o644)
	})
	m := mountOvlfs(t, []string{l}, u, w)
	j := filepath.Join
	wrMust(t, "setxattr trusted.overlay.foo", unix.Lsetxattr(j(m, "f"), "trusted.overlay.foo", []byte("bar"), 0))
	if v, err := getXattr(j(u, "f"), "trusted.overlay.overlay.foo"); err != nil || string(v) != "bar" {
		t.Errorf("on disk trusted.overlay.overlay.foo = %q, %v; want \"bar\"", v, err)
	}
	if v, err := getXattr(j(u, "f"), "trusted.overlay.foo"); err == nil {
		t.Errorf("on disk trusted.overlay.foo = %q: a client wrote overlay metadata", v)
	}
	if v, err := getXattr(j(m, "f"), "trusted.overlay.foo"); err != nil || string(v) != "bar" {
		t.Errorf("through the mount trusted.overlay.foo = %q, %v; want \"bar\"", v, err)
	}
	unmountFuse(t, m)
	k := mountKernel(t, []string{l}, u, w)
	if v, err := getXattr(j(k, "f"), "trusted.overlay.foo"); err != nil || string(v) != "bar" {
		t.Errorf("through the kernel trusted.overlay.foo = %q, %v; want \"bar\"", v, err)
	}
}

func TestRuleNoForgedOpaque(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "d/x"), []byte("x"), 0o644)
	})
	m := mountOvlfs(t, []string{l}, u, w)
	j := filepath.Join
	err := unix.Lsetxattr(j(m, "d"), "trusted.overlay.opaque", []byte("y"), 0)
	t.Logf("client setxattr trusted.overlay.opaque=y on d: %v", wrRes(err))
	if v, err := getXattr(j(u, "d"), "trusted.overlay.opaque"); err == nil {
		t.Errorf("upper/d has trusted.overlay.opaque=%q set by a client", v)
	}
	if !wrExists(j(m, "d/x")) {
		t.Errorf("d/x vanished through ovlfs: the client made d opaque")
	}
	unmountFuse(t, m)
	k := mountKernel(t, []string{l}, u, w)
	if !wrExists(j(k, "d/x")) {
		t.Errorf("d/x vanished through the kernel: the client made d opaque")
	}
}

func TestRuleStaleScratchCleaned(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) { writeFile(t, filepath.Join(l, "f"), []byte("f"), 0o644) })
	j := filepath.Join
	writeFile(t, j(w, "ovlfs", "#999.1"), []byte("half a copy"), 0o600)
	writeFile(t, j(w, "ovlfs", "#999.2", "sub", "x"), []byte("x"), 0o600)
	mkWhiteout(t, j(w, "ovlfs", "#999.3"))
	chmod(t, j(w, "ovlfs", "#999.2"), 0o500)
	m := mountOvlfs(t, []string{l}, u, w)
	if names, err := scratchObjects(w); err != nil || len(names) != 0 {
		t.Errorf("workdir/ovlfs after mount: %q, %v; want empty", names, err)
	}
	if b, err := os.ReadFile(j(m, "f")); err != nil || string(b) != "f" {
		t.Errorf("f = %q, %v", b, err)
	}
}

func TestRuleInoStableAcrossCopyUp(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "f"), []byte("f"), 0o644)
		writeFile(t, filepath.Join(l, "d/g"), []byte("g"), 0o644)
	})
	m := mountOvlfs(t, []string{l}, u, w)
	j := filepath.Join
	before := map[string]uint64{}
	for _, p := range []string{"f", "d", "d/g"} {
		before[p] = wrLstat(t, j(m, p)).Ino
	}
	for _, p := range []string{"f", "d/g"} {
		f, err := os.OpenFile(j(m, p), os.O_WRONLY|os.O_APPEND, 0)
		wrMust(t, "open", err)
		f.Write([]byte("\n"))
		f.Close()
	}
	for p, ino := range before {
		if now := wrLstat(t, j(m, p)).Ino; now != ino {
			t.Errorf("%s: st_ino %d before copy-up, %d after (while mounted)", p, ino, now)
		}
	}
	unmountFuse(t, m)
	m2 := mountOvlfs(t, []string{l}, u, w)
	for p, ino := range before {
		if now := wrLstat(t, j(m2, p)).Ino; now != ino {
			t.Errorf("%s: st_ino %d before copy-up, %d after a remount", p, ino, now)
		}
	}
}

func TestRuleUnlinkedWhileOpen(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) { writeFile(t, filepath.Join(l, "f"), []byte("lower"), 0o644) })
	m := mountOvlfs(t, []string{l}, u, w)
	j := filepath.Join
	wrMust(t, "create g", os.WriteFile(j(m, "g"), []byte("upper"), 0o644))
	for _, name := range []string{"f", "g"} {
		f, err := os.OpenFile(j(m, name), os.O_RDWR, 0)
		wrMust(t, "open "+name, err)
		wrMust(t, "rm "+name, os.Remove(j(m, name)))
		if _, err := f.WriteAt([]byte("XY"), 1); err != nil {
			t.Errorf("%s: write after unlink: %v", name, err)
		}
		buf := make([]byte, 10)
		n, err := f.ReadAt(buf, 0)
		want := map[string]string{"f": "lXYer", "g": "uXYer"}[name]
		if string(buf[:n]) != want {
			t.Errorf("%s: read after unlink = %q (%v); want %q", name, buf[:n], err, want)
		}
		f.Close()
		if wrExists(j(m, name)) {
			t.Errorf("%s is still visible after unlink", name)
		}
	}
	wrCheckNoJunk(t, u)
}

func TestRulePosixLockConflict(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("SKIP: needs python3 for a second process")
	}
	l, u, w := wrLayers(t, func(l string) { writeFile(t, filepath.Join(l, "f"), []byte("lock me"), 0o644) })
	m := mountOvlfs(t, []string{l}, u, w)
	p := filepath.Join(m, "f")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	wrMust(t, "open", err)
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	wrMust(t, "F_SETLK write lock", unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk))
	script := `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("GOT")
except OSError as e:
    print("BLOCKED", e.errno)
`
	out, err := exec.Command("python3", "-c", script, p).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "BLOCKED") {
		t.Errorf("a second process locking f while we hold a write lock: %q, %v; want BLOCKED (EAGAIN/EACCES)", out, err)
	}
	lk.Type = unix.F_UNLCK
	wrMust(t, "unlock", unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk))
	out, err = exec.Command("python3", "-c", script, p).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "GOT") {
		t.Errorf("locking after our unlock: %q, %v; want GOT", out, err)
	}
}

func TestRuleMmapSharedWrite(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) { writeFile(t, filepath.Join(l, "f"), bytes.Repeat([]byte("."), 8192), 0o644) })
	m := mountOvlfs(t, []string{l}, u, w)
	p := filepath.Join(m, "f")
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	wrMust(t, "open", err)
	mem, err := unix.Mmap(fd, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		t.Fatalf("mmap MAP_SHARED through the mount: %v", err)
	}
	copy(mem[4096:], "written through mmap")
	wrMust(t, "msync", unix.Msync(mem, unix.MS_SYNC))
	wrMust(t, "munmap", unix.Munmap(mem))
	unix.Close(fd)
	b, err := os.ReadFile(p)
	if err != nil || !bytes.HasPrefix(b[4096:], []byte("written through mmap")) {
		t.Errorf("read() after munmap does not show the mmap write: %v", err)
	}
	unmountFuse(t, m)
	b, err = os.ReadFile(filepath.Join(u, "f"))
	if err != nil || len(b) < 4096 || !bytes.HasPrefix(b[4096:], []byte("written through mmap")) {
		t.Errorf("upper/f does not hold the mmap write: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(l, "f")); !bytes.Equal(b, bytes.Repeat([]byte("."), 8192)) {
		t.Errorf("the lower file changed")
	}
}
