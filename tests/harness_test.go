// Package tests mounts ovlfs for real and compares what it shows with what the
// kernel's overlayfs shows for the same layers (the kernel is the oracle, see
// docs/format.md). The tests need root, /dev/fuse and overlay in
// /proc/filesystems; without them they skip with a message.
//
// OVLFS_TEST_BIN=/path/to/binary runs the tests against that binary instead of
// building ./cmd/ovlfs (e.g. /usr/bin/fuse-overlayfs, to check the harness).
// -long (go test ./tests -args -long) or OVLFS_TEST_LONG=1 runs more seeds.
package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/layout"
)

var longTests = flag.Bool("long", false, "run the long variants of the equivalence tests (more seeds)")

var (
	// ovlfsBin is the mount program under test.
	ovlfsBin string
	// ovlfsBuildErr is set when building ./cmd/ovlfs failed; mountOvlfs then fails.
	ovlfsBuildErr error
	// binDir holds the binaries the tests build; runMain removes it.
	binDir string
)

func TestMain(m *testing.M) {
	if what := os.Getenv("OVLFS_TEST_CHILD"); what != "" {
		os.Exit(runChild(what, os.Args[1:])) // see childDo
	}
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ovlfs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests: temp dir for the binaries:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	if b := os.Getenv("OVLFS_TEST_BIN"); b != "" {
		ovlfsBin = b
		return m.Run()
	}
	ovlfsBin = filepath.Join(dir, "ovlfs")
	cmd := exec.Command("go", "build", "-o", ovlfsBin, "github.com/ovlfs/ovlfs/cmd/ovlfs")
	if out, err := cmd.CombinedOutput(); err != nil {
		ovlfsBuildErr = fmt.Errorf("go build ./cmd/ovlfs: %v\n%s", err, out)
	}
	return m.Run()
}

func isLong() bool {
	return *longTests || os.Getenv("OVLFS_TEST_LONG") != ""
}

// requireMount skips the test, with the reason, when real mounts are impossible.
func requireMount(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root (real FUSE and overlay mounts); run as root, e.g. unshare -m --propagation private go test ./tests")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("SKIP: /dev/fuse is missing: %v", err)
	}
	fss, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Skipf("SKIP: cannot read /proc/filesystems: %v", err)
	}
	found := false
	for _, l := range strings.Split(string(fss), "\n") {
		if strings.TrimSpace(strings.TrimPrefix(l, "nodev")) == "overlay" {
			found = true
		}
	}
	if !found {
		t.Skip("SKIP: the kernel has no overlay filesystem (modprobe overlay)")
	}
}

// escapeLayer escapes ':' ',' and '\' in a layer path, as in lowerdir=.
func escapeLayer(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r == ':' || r == ',' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func layerOptions(lowers []string, upper, work string) string {
	esc := make([]string, len(lowers))
	for i, l := range lowers {
		esc[i] = escapeLayer(l)
	}
	opts := "lowerdir=" + strings.Join(esc, ":")
	if upper != "" {
		opts += ",upperdir=" + escapeLayer(upper) + ",workdir=" + escapeLayer(work)
	}
	return opts
}

func newMountpoint(t testing.TB) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// mountOvlfs mounts the program under test the way Podman does
// (`ovlfs -o lowerdir=L1:L2,upperdir=U,workdir=W MNT`) and returns the mount
// point. extra items are appended to the -o string. Without upper the mount
// is read-only. The mount is undone in t.Cleanup.
func mountOvlfs(t testing.TB, lowers []string, upper, work string, extra ...string) string {
	t.Helper()
	requireMount(t)
	if ovlfsBuildErr != nil {
		t.Fatalf("the ovlfs binary could not be built:\n%v", ovlfsBuildErr)
	}
	mnt := newMountpoint(t)
	opts := layerOptions(lowers, upper, work)
	for _, e := range extra {
		opts += "," + e
	}
	errFile, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ovlfsBin, "-o", opts, mnt)
	// A file, not a pipe: a daemon that keeps stderr open must not hang us.
	cmd.Stderr = errFile
	runErr := cmd.Run()
	stderr, _ := os.ReadFile(errFile.Name())
	if runErr != nil {
		if isMounted(mnt) {
			unmountFuse(t, mnt)
		}
		t.Fatalf("%s -o %s %s: %v\nstderr:\n%s", ovlfsBin, shorten(opts, 600), mnt, runErr, stderr)
	}
	if !isMounted(mnt) {
		t.Fatalf("%s returned 0 but %s is not a mount point\nstderr:\n%s", ovlfsBin, mnt, stderr)
	}
	t.Cleanup(func() { unmountFuse(t, mnt) })
	return mnt
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("...(%d bytes)", len(s))
}

// unmountFuse unmounts with fusermount3 -u (falling back to umount -l) and waits,
// bounded, for the daemon serving mnt to exit.
func unmountFuse(t testing.TB, mnt string) {
	t.Helper()
	pids := daemonPids(mnt)
	if !isMounted(mnt) {
		// Already unmounted (by the test itself); just wait for the daemon.
	} else if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Logf("fusermount3 -u %s: %v: %s; trying umount -l", mnt, err, bytes.TrimSpace(out))
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount -l %s: %v: %s", mnt, err, bytes.TrimSpace(out))
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if processAlive(pid) {
			t.Errorf("daemon pid %d for %s still runs 15s after the unmount; killing it", pid, mnt)
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// daemonPids lists the processes whose command line names mnt as an argument
// (the daemon serving it; mnt is a unique temp path).
func daemonPids(mnt string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == mnt {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie (state Z) has exited; its parent (not us) reaps it.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// isMounted tells whether mnt is a mount point in our mount namespace.
func isMounted(mnt string) bool { return layout.IsMountPoint(mnt) }

// mountKernel mounts the kernel's overlayfs on the layers (opts are extra
// options such as "redirect_dir=on") and unmounts it in t.Cleanup. Without
// upper the overlay is read-only. When the legacy option string would not fit
// in 4095 bytes it uses the new mount API (one "lowerdir+" per layer).
func mountKernel(t testing.TB, lowers []string, upper, work string, opts ...string) string {
	t.Helper()
	requireMount(t)
	mnt := newMountpoint(t)
	data := layerOptions(lowers, upper, work)
	for _, o := range opts {
		data += "," + o
	}
	if len(data) <= 4095 {
		if err := unix.Mount("overlay", mnt, "overlay", 0, data); err != nil {
			t.Fatalf("mount -t overlay -o %s %s: %v (see dmesg)", shorten(data, 600), mnt, err)
		}
	} else if err := mountKernelFsconfig(mnt, lowers, upper, work, opts); err != nil {
		t.Fatalf("overlay with %d lowers through fsconfig: %v (see dmesg)", len(lowers), err)
	}
	t.Cleanup(func() {
		if !isMounted(mnt) {
			return // the test unmounted it
		}
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Logf("umount %s: %v; detaching", mnt, err)
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("umount -l %s: %v", mnt, err)
			}
		}
	})
	return mnt
}

func mountKernelFsconfig(mnt string, lowers []string, upper, work string, opts []string) error {
	return layout.MountOverlay(mnt, lowers, upper, work, opts, false)
}

// Entry is what a client sees of one path: everything but times, inode
// numbers and link counts.
type Entry struct {
	Type   string // dir, file, symlink, fifo, chr, blk, sock
	Mode   uint32 // permission bits plus setuid, setgid, sticky
	UID    uint32
	GID    uint32
	Size   int64  // regular files
	Hash   string // sha256 of a regular file's content
	Target string // symlink target
	Rdev   uint64 // devices
	Xattrs []string
	Names  []string // directories: names from readdir, sorted
	Err    string   // what went wrong reading it (lookup, open, read...)
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "chr"
	case unix.S_IFBLK:
		return "blk"
	case unix.S_IFSOCK:
		return "sock"
	}
	return fmt.Sprintf("type%o", mode&unix.S_IFMT)
}

// userXattrs lists the user.* xattrs of p as sorted "name=value" (value %q).
func userXattrs(p string) ([]string, error) {
	return listXattrs(p, func(n string) bool { return strings.HasPrefix(n, "user.") })
}

// listXattrs lists the xattrs of p (no symlink following) that keep accepts.
func listXattrs(p string, keep func(string) bool) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		return nil, fmt.Errorf("llistxattr: %w", err)
	}
	if sz == 0 {
		return nil, nil
	}
	buf := make([]byte, sz+1024)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("llistxattr: %w", err)
	}
	var out []string
	for _, n := range strings.Split(string(buf[:sz]), "\x00") {
		if n == "" || !keep(n) {
			continue
		}
		v, err := getXattr(p, n)
		if err != nil {
			out = append(out, n+" (listed, get fails: "+err.Error()+")")
			continue
		}
		out = append(out, fmt.Sprintf("%s=%q", n, v))
	}
	sort.Strings(out)
	return out, nil
}

func getXattr(p, name string) ([]byte, error) {
	sz, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, sz+1024)
	sz, err = unix.Lgetxattr(p, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:sz], nil
}

// snapshot walks the tree at root (never following symlinks) and returns what
// a client sees, keyed by path relative to root ("." for root). Every name
// readdir returns is looked up; errors are recorded in Entry.Err.
func snapshot(t testing.TB, root string) map[string]Entry {
	t.Helper()
	out := map[string]Entry{}
	snapshotPath(root, ".", out)
	return out
}

func snapshotPath(root, rel string, out map[string]Entry) {
	p := filepath.Join(root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		out[rel] = Entry{Err: "lstat: " + errName(err)}
		return
	}
	e := Entry{
		Type: fileType(st.Mode),
		Mode: st.Mode & 0o7777,
		UID:  st.Uid,
		GID:  st.Gid,
	}
	var errs []string
	if x, err := userXattrs(p); err != nil {
		errs = append(errs, err.Error())
	} else {
		e.Xattrs = x
	}
	var children []string
	switch e.Type {
	case "file":
		e.Size = st.Size
		h, err := hashFile(p)
		if err != nil {
			errs = append(errs, err.Error())
		}
		e.Hash = h
	case "symlink":
		target, err := os.Readlink(p)
		if err != nil {
			errs = append(errs, "readlink: "+errName(err))
		}
		e.Target = target
	case "chr", "blk":
		e.Rdev = st.Rdev
	case "dir":
		ents, err := os.ReadDir(p)
		if err != nil {
			errs = append(errs, "readdir: "+errName(err))
		}
		seen := map[string]bool{}
		for _, de := range ents {
			n := de.Name()
			if seen[n] {
				errs = append(errs, "readdir: duplicate name "+strconv.Quote(n))
				continue
			}
			seen[n] = true
			e.Names = append(e.Names, n)
			children = append(children, n)
			var cst unix.Stat_t
			if err := unix.Lstat(filepath.Join(p, n), &cst); err == nil {
				dt := fileTypeOfDirEntry(de.Type())
				if dt != "" && dt != fileType(cst.Mode) {
					errs = append(errs, fmt.Sprintf("readdir: d_type of %q is %s, lstat says %s", n, dt, fileType(cst.Mode)))
				}
			}
		}
	}
	if len(errs) > 0 {
		e.Err = strings.Join(errs, "; ")
	}
	out[rel] = e
	for _, n := range children {
		snapshotPath(root, filepath.Join(rel, n), out)
	}
}

func fileTypeOfDirEntry(m os.FileMode) string {
	switch m & os.ModeType {
	case os.ModeDir:
		return "dir"
	case 0:
		return "file"
	case os.ModeSymlink:
		return "symlink"
	case os.ModeNamedPipe:
		return "fifo"
	case os.ModeDevice | os.ModeCharDevice:
		return "chr"
	case os.ModeDevice:
		return "blk"
	case os.ModeSocket:
		return "sock"
	}
	return ""
}

func hashFile(p string) (string, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("open: %s", errName(err))
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read: %s", errName(err))
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// errName gives the errno's name when there is one (ENOENT), else the message.
func errName(err error) string {
	var en unix.Errno
	if errors.As(err, &en) {
		if n := unix.ErrnoName(en); n != "" {
			return n
		}
	}
	return err.Error()
}

// diffSnapshots describes how got differs from want, one line per difference.
func diffSnapshots(got, want map[string]Entry) []string {
	keys := map[string]bool{}
	for k := range got {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var d []string
	for _, k := range sorted {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !gok:
			d = append(d, fmt.Sprintf("%q: missing (want %s)", k, w.short()))
			continue
		case !wok:
			d = append(d, fmt.Sprintf("%q: unexpected %s", k, g.short()))
			continue
		}
		field := func(name string, gv, wv any) {
			if fmt.Sprint(gv) != fmt.Sprint(wv) {
				d = append(d, fmt.Sprintf("%q: %s got %v, want %v", k, name, gv, wv))
			}
		}
		field("type", g.Type, w.Type)
		field("mode", fmt.Sprintf("%04o", g.Mode), fmt.Sprintf("%04o", w.Mode))
		field("uid", g.UID, w.UID)
		field("gid", g.GID, w.GID)
		field("size", g.Size, w.Size)
		field("content sha256", g.Hash, w.Hash)
		field("symlink target", strconv.Quote(g.Target), strconv.Quote(w.Target))
		field("rdev", fmt.Sprintf("%d:%d", unix.Major(g.Rdev), unix.Minor(g.Rdev)), fmt.Sprintf("%d:%d", unix.Major(w.Rdev), unix.Minor(w.Rdev)))
		field("xattrs", g.Xattrs, w.Xattrs)
		field("error", g.Err, w.Err)
		if extra, miss := setDiff(g.Names, w.Names); len(extra)+len(miss) > 0 {
			d = append(d, fmt.Sprintf("%q: readdir lists extra %q, lacks %q", k, shortList(extra), shortList(miss)))
		}
	}
	return d
}

func (e Entry) short() string {
	s := e.Type
	if e.Type == "symlink" {
		s += " -> " + e.Target
	}
	if e.Type == "dir" {
		s += fmt.Sprintf(" (%d names)", len(e.Names))
	}
	if e.Err != "" {
		s += " [" + e.Err + "]"
	}
	return s
}

func shortList(l []string) []string {
	if len(l) > 10 {
		return append(l[:10:10], fmt.Sprintf("...%d more", len(l)-10))
	}
	return l
}

// setDiff returns what is in a but not b, and what is in b but not a.
func setDiff(a, b []string) (onlyA, onlyB []string) {
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, x := range a {
		inA[x] = true
	}
	for _, x := range b {
		inB[x] = true
	}
	for _, x := range a {
		if !inB[x] {
			onlyA = append(onlyA, x)
		}
	}
	for _, x := range b {
		if !inA[x] {
			onlyB = append(onlyB, x)
		}
	}
	return
}

// requireSameTree fails the test with up to 30 differences between the trees.
func requireSameTree(t testing.TB, what string, got, want map[string]Entry) {
	t.Helper()
	d := diffSnapshots(got, want)
	if len(d) == 0 {
		return
	}
	n := len(d)
	if n > 30 {
		d = append(d[:30], fmt.Sprintf("... and %d more", n-30))
	}
	t.Errorf("%s: %d differences (got = %s, want = kernel/expected):\n  %s", what, n, filepath.Base(ovlfsBin), strings.Join(d, "\n  "))
}

// checkHidden asserts that each path (relative to mnt) is neither found by
// lookup (ENOENT) nor listed in its parent directory.
func checkHidden(t testing.TB, mnt string, paths ...string) {
	t.Helper()
	for _, rel := range paths {
		p := filepath.Join(mnt, rel)
		var st unix.Stat_t
		err := unix.Lstat(p, &st)
		if err == nil {
			t.Errorf("%s: hidden name %q is found by lookup: %s mode %o", mnt, rel, fileType(st.Mode), st.Mode&0o7777)
		} else if !errors.Is(err, unix.ENOENT) {
			t.Errorf("%s: lookup of hidden name %q: %v, want ENOENT", mnt, rel, errName(err))
		}
		names, err := readdirNames(filepath.Dir(p))
		if err != nil {
			continue // the parent may be gone too
		}
		for _, n := range names {
			if n == filepath.Base(rel) {
				t.Errorf("%s: hidden name %q is listed by readdir", mnt, rel)
			}
		}
	}
}

func readdirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// scratchObjects lists the unfinished objects in ovlfs's scratch dir
// (workdir/ovlfs): every name but the shared whiteout that new whiteouts are
// hard links of (cow.NewWhiteout), which lives there for the whole mount.
func scratchObjects(work string) ([]string, error) {
	names, err := readdirNames(filepath.Join(work, "ovlfs"))
	out := names[:0]
	for _, n := range names {
		if n != "whiteout" {
			out = append(out, n)
		}
	}
	return out, err
}

// Layer builders. Each creates missing parents with mode 0755 and fails the
// test on error.

func mkdirs(t testing.TB, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, p string, content []byte, mode uint32) {
	t.Helper()
	mkdirs(t, filepath.Dir(p))
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	chmod(t, p, mode)
}

func mkdirMode(t testing.TB, p string, mode uint32) {
	t.Helper()
	mkdirs(t, filepath.Dir(p))
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	chmod(t, p, mode)
}

// chmod sets permission and setuid/setgid/sticky bits (os.Chmod would drop them).
func chmod(t testing.TB, p string, mode uint32) {
	t.Helper()
	if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, 0); err != nil {
		t.Fatalf("chmod %s %o: %v", p, mode, err)
	}
}

func symlink(t testing.TB, target, p string) {
	t.Helper()
	mkdirs(t, filepath.Dir(p))
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// chown sets the owner without following symlinks. It clears setuid/setgid,
// so call it before chmod.
func chown(t testing.TB, p string, uid, gid int) {
	t.Helper()
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func setXattr(t testing.TB, p, name string, value []byte) {
	t.Helper()
	if err := unix.Lsetxattr(p, name, value, 0); err != nil {
		t.Fatalf("setxattr %s %s: %v", p, name, err)
	}
}

// mkWhiteout makes a kernel whiteout (char device 0/0) at p.
func mkWhiteout(t testing.TB, p string) {
	t.Helper()
	mkdirs(t, filepath.Dir(p))
	if err := unix.Mknod(p, unix.S_IFCHR|0, 0); err != nil {
		t.Fatalf("mknod whiteout %s: %v", p, err)
	}
}

func mkFifo(t testing.TB, p string, mode uint32) {
	t.Helper()
	mkdirs(t, filepath.Dir(p))
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	chmod(t, p, mode)
}

func mkDevice(t testing.TB, p string, typ uint32, major, minor uint32) {
	t.Helper()
	mkdirs(t, filepath.Dir(p))
	if err := unix.Mknod(p, typ|0o644, int(unix.Mkdev(major, minor))); err != nil {
		t.Fatalf("mknod %s: %v", p, err)
	}
}

func hardlink(t testing.TB, old, p string) {
	t.Helper()
	mkdirs(t, filepath.Dir(p))
	if err := os.Link(old, p); err != nil {
		t.Fatal(err)
	}
}

// setOpaque marks dir opaque in the kernel's format (trusted NS, root only).
func setOpaque(t testing.TB, dir string) {
	t.Helper()
	setXattr(t, dir, "trusted.overlay.opaque", []byte("y"))
}

// layerSuffix is added to some layer dir names so that they need escaping in
// lowerdir=. fuse-overlayfs 1.10 does not understand "\:", so the harness
// leaves colons out when it runs against fuse-overlayfs.
func layerSuffix() string {
	if strings.Contains(filepath.Base(ovlfsBin), "fuse-overlayfs") {
		return " s,c"
	}
	return " s:p,c"
}

// randomNames are the names the random layers use; they include spaces,
// colons, commas, unicode, leading dashes and a 255-byte name.
var randomNames = []string{
	"a", "b", "c", "d", "e", "f", "g", "etc", "usr", "bin", "lib", "x1", "x2",
	"with space", "co:lon", "com,ma", "back\\slash", "ünïcødé-名前", "-dash", "--double",
	".hidden", "...", "a.b.c", "UPPER", "emoji-😀", strings.Repeat("n", 255),
	strings.Repeat("ü", 127) + "x", // 255 bytes
}

var (
	randomUIDs     = []int{0, 0, 0, 1000, 65534, 12345}
	randomFileMode = []uint32{0o644, 0o644, 0o600, 0o755, 0o444, 0, 0o4755, 0o2755, 0o777, 0o1644}
	randomDirMode  = []uint32{0o755, 0o755, 0o700, 0o1777, 0, 0o711, 0o2775, 0o555}
)

// randomLayers makes nLayers random layers under dir and returns them topmost
// first, with the paths that whiteouts must hide in the merged view. It keeps
// a model of the merged tree so that whiteouts are only made where the kernel
// filters them (in directories that merge with a lower one).
func randomLayers(t testing.TB, dir string, seed int64, nLayers int) (lowers, hidden []string) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	model := map[string]bool{".": true} // merged view of the layers so far: path -> is dir
	var whiteouts []string
	for li := 0; li < nLayers; li++ {
		layer := filepath.Join(dir, fmt.Sprintf("layer%d", li))
		if rng.Intn(4) == 0 {
			layer += layerSuffix() // layer paths that need escaping
		}
		mkdirs(t, layer)
		lowers = append([]string{layer}, lowers...)
		lower := map[string]bool{}
		for k, v := range model {
			lower[k] = v
		}
		// cur: entries made in this layer; for dirs, whether they merge with a lower dir.
		type curEnt struct{ dir, merging bool }
		cur := map[string]curEnt{".": {true, li > 0}}
		firstWhiteout := ""
		pick := func(dirs bool) string {
			var c []string
			for k, isDir := range model {
				if isDir == dirs {
					c = append(c, k)
				}
			}
			if len(c) == 0 {
				return ""
			}
			sort.Strings(c)
			return c[rng.Intn(len(c))]
		}
		removeSubtree := func(p string) {
			for k := range model {
				if strings.HasPrefix(k, p+"/") {
					delete(model, k)
				}
			}
		}
		// ensureDir makes dir d (a dir in the model) exist in this layer.
		var ensureDir func(d string) bool
		ensureDir = func(d string) bool {
			if c, ok := cur[d]; ok {
				return c.dir
			}
			if !ensureDir(filepath.Dir(d)) {
				return false
			}
			mkdirMode(t, filepath.Join(layer, d), randomDirMode[rng.Intn(len(randomDirMode))])
			cur[d] = curEnt{dir: true, merging: lower[d] && cur[filepath.Dir(d)].merging}
			return true
		}
		newName := func(parent string) string {
			for i := 0; i < 10; i++ {
				n := filepath.Join(parent, randomNames[rng.Intn(len(randomNames))])
				if _, ok := cur[n]; !ok && len(n) < 900 && strings.Count(n, "/") < 5 {
					return n
				}
			}
			return ""
		}
		owner := func(p string) {
			chown(t, p, randomUIDs[rng.Intn(len(randomUIDs))], randomUIDs[rng.Intn(len(randomUIDs))])
		}
		xattrs := func(p string) {
			for i := rng.Intn(3); i > 0; i-- {
				v := make([]byte, rng.Intn(40))
				rng.Read(v)
				setXattr(t, p, fmt.Sprintf("user.k%d", rng.Intn(4)), v)
			}
		}
		var files []string // regular files made in this layer, for hard links
		nOps := 8 + rng.Intn(25)
		for op := 0; op < nOps; op++ {
			switch r := rng.Intn(20); {
			case r < 6: // new file
				parent := pick(true)
				if !ensureDir(parent) {
					continue
				}
				n := newName(parent)
				if n == "" {
					continue
				}
				var size int
				switch rng.Intn(6) {
				case 0:
					size = 0
				case 1:
					size = 128<<10 + rng.Intn(200<<10)
				default:
					size = rng.Intn(5000)
				}
				data := make([]byte, size)
				rng.Read(data)
				p := filepath.Join(layer, n)
				writeFile(t, p, data, 0o644)
				owner(p)
				chmod(t, p, randomFileMode[rng.Intn(len(randomFileMode))])
				xattrs(p)
				removeSubtree(n)
				model[n], cur[n] = false, curEnt{}
				files = append(files, n)
			case r < 9: // new dir (merges if a lower dir of that name is visible)
				parent := pick(true)
				if !ensureDir(parent) {
					continue
				}
				n := newName(parent)
				if n == "" {
					continue
				}
				p := filepath.Join(layer, n)
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
				owner(p)
				chmod(t, p, randomDirMode[rng.Intn(len(randomDirMode))])
				xattrs(p)
				merging := model[n] && lower[n] && cur[parent].merging
				if !merging {
					removeSubtree(n)
				}
				model[n], cur[n] = true, curEnt{dir: true, merging: merging}
			case r < 11: // symlink, relative, pointing inside the tree
				parent := pick(true)
				if !ensureDir(parent) {
					continue
				}
				n := newName(parent)
				if n == "" {
					continue
				}
				target := pick(rng.Intn(2) == 0)
				depth := strings.Count(n, "/")
				rel := strings.Repeat("../", depth) + target
				if target == "." || target == "" {
					rel = strings.Repeat("../", depth) + "nothing"
				}
				p := filepath.Join(layer, n)
				symlink(t, rel, p)
				owner(p)
				removeSubtree(n)
				model[n], cur[n] = false, curEnt{}
			case r < 12: // hard link within the layer
				if len(files) == 0 {
					continue
				}
				old := files[rng.Intn(len(files))]
				if _, ok := model[old]; !ok {
					continue
				}
				if fi, err := os.Lstat(filepath.Join(layer, old)); err != nil || !fi.Mode().IsRegular() {
					continue
				}
				parent := pick(true)
				if !ensureDir(parent) {
					continue
				}
				n := newName(parent)
				if n == "" {
					continue
				}
				hardlink(t, filepath.Join(layer, old), filepath.Join(layer, n))
				removeSubtree(n)
				model[n], cur[n] = false, curEnt{}
			case r < 13: // fifo or device
				parent := pick(true)
				if !ensureDir(parent) {
					continue
				}
				n := newName(parent)
				if n == "" {
					continue
				}
				p := filepath.Join(layer, n)
				if rng.Intn(3) == 0 {
					mkDevice(t, p, unix.S_IFCHR, 1, 3)
				} else {
					mkFifo(t, p, randomFileMode[rng.Intn(len(randomFileMode))]&0o777)
				}
				removeSubtree(n)
				model[n], cur[n] = false, curEnt{}
			case r < 16: // whiteout over a lower name
				var c []string
				for k := range lower {
					if _, vis := model[k]; vis && k != "." {
						if _, mine := cur[k]; !mine {
							c = append(c, k)
						}
					}
				}
				if len(c) == 0 {
					continue
				}
				sort.Strings(c)
				n := c[rng.Intn(len(c))]
				parent := filepath.Dir(n)
				if !ensureDir(parent) || !cur[parent].merging {
					continue
				}
				p := filepath.Join(layer, n)
				if firstWhiteout != "" && rng.Intn(2) == 0 {
					hardlink(t, firstWhiteout, p) // kernel style: links of one inode
				} else {
					mkWhiteout(t, p)
					if firstWhiteout == "" {
						firstWhiteout = p
					}
				}
				delete(model, n)
				removeSubtree(n)
				cur[n] = curEnt{}
				whiteouts = append(whiteouts, n)
			case r < 17: // opaque dir over a visible lower dir
				d := pick(true)
				if d == "." || d == "" {
					continue
				}
				if _, mine := cur[d]; mine || !ensureDir(filepath.Dir(d)) {
					continue
				}
				p := filepath.Join(layer, d)
				mkdirMode(t, p, randomDirMode[rng.Intn(len(randomDirMode))])
				setOpaque(t, p)
				removeSubtree(d)
				cur[d] = curEnt{dir: true}
			case r < 18: // file replaced by a dir
				f := pick(false)
				if f == "" {
					continue
				}
				if _, mine := cur[f]; mine || !ensureDir(filepath.Dir(f)) {
					continue
				}
				mkdirMode(t, filepath.Join(layer, f), randomDirMode[rng.Intn(len(randomDirMode))])
				model[f], cur[f] = true, curEnt{dir: true}
			default: // dir replaced by a file
				d := pick(true)
				if d == "." || d == "" {
					continue
				}
				if _, mine := cur[d]; mine || !ensureDir(filepath.Dir(d)) {
					continue
				}
				p := filepath.Join(layer, d)
				writeFile(t, p, []byte("was a dir "+d), randomFileMode[rng.Intn(len(randomFileMode))])
				removeSubtree(d)
				model[d], cur[d] = false, curEnt{}
			}
		}
	}
	for _, w := range whiteouts {
		if _, vis := model[w]; !vis && model[filepath.Dir(w)] {
			hidden = append(hidden, w)
		}
	}
	return lowers, hidden
}
