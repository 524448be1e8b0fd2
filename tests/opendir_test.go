package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOpenDirRemoved: fstat of a directory open while it is removed or renamed
// over still answers with that directory's attributes, as on the kernel overlay
// (and any disk filesystem), for a lower-only, a merged and an upper-only
// directory. Each directory has its own mode, so the answer says which one
// was stat'ed.
func TestOpenDirRemoved(t *testing.T) {
	fill := func(l string) {
		mkdirMode(t, filepath.Join(l, "lo"), 0o751)
		mkdirMode(t, filepath.Join(l, "me"), 0o753)
		mkdirMode(t, filepath.Join(l, "dst"), 0o755)
		mkdirMode(t, filepath.Join(l, "keep"), 0o757)
	}
	// run opens each directory, removes it (or renames another over it) and
	// reports what fstat of the open fd answers.
	run := func(m string) map[string]string {
		J := func(p string) string { return filepath.Join(m, p) }
		wrMust(t, "mkdir me/sub", os.Mkdir(J("me/sub"), 0o700)) // copies me up: merged
		wrMust(t, "rmdir me/sub", os.Remove(J("me/sub")))
		wrMust(t, "mkdir up", os.Mkdir(J("up"), 0o700))
		wrMust(t, "chmod up", os.Chmod(J("up"), 0o715))
		wrMust(t, "mkdir src", os.Mkdir(J("src"), 0o700))
		wrMust(t, "chmod src", os.Chmod(J("src"), 0o705))
		fds := map[string]int{}
		for _, d := range []string{"lo", "me", "up", "dst", "keep"} {
			fd, err := unix.Open(J(d), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			wrMust(t, "open "+d, err)
			fds[d] = fd
		}
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
		for _, d := range []string{"lo", "me", "up"} {
			wrMust(t, "rmdir "+d, unix.Rmdir(J(d)))
		}
		wrMust(t, "rename src dst", unix.Rename(J("src"), J("dst")))
		got := map[string]string{}
		for d, fd := range fds {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				got[d] = "fstat: " + errName(err)
				continue
			}
			got[d] = fmt.Sprintf("%s %#o", fileType(st.Mode), st.Mode&0o7777)
		}
		// The name now shows the directory renamed there.
		var st unix.Stat_t
		if err := unix.Stat(J("dst"), &st); err != nil {
			got["dst (name)"] = "stat: " + errName(err)
		} else {
			got["dst (name)"] = fmt.Sprintf("%s %#o", fileType(st.Mode), st.Mode&0o7777)
		}
		return got
	}

	got, want := sideBySide(t, fill, func(_, m string) map[string]string { return run(m) })
	for d, k := range want {
		if got[d] != k {
			t.Errorf("%s: ovlfs %q, kernel overlay %q", d, got[d], k)
		}
	}
	if want["lo"] != "dir 0751" || want["dst"] != "dir 0755" || want["dst (name)"] != "dir 0705" {
		t.Errorf("the kernel overlay answered %v, not what this test expects of it", want)
	}
}

// TestDirListingsCached: where the kernel can do without OPENDIR
// (FUSE_NO_OPENDIR_SUPPORT, which it announces in INIT), a cached merged
// directory is listed again without a single request to the daemon, and a
// change made through the mount still shows in the next listing. The
// daemon's request trace (-d) says what the kernel asked.
func TestDirListingsCached(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		for _, n := range []string{"a", "b", "c"} {
			writeFile(t, filepath.Join(l, "d", n), []byte(n), 0o644)
		}
	})
	mnt, trace := mountTraced(t, []string{l}, u, w)
	d := filepath.Join(mnt, "d")
	wrMust(t, "mkdir d/sub (merges d)", os.Mkdir(filepath.Join(d, "sub"), 0o755))
	list := func() []string {
		names, err := readdirNames(d)
		wrMust(t, "readdir d", err)
		slices.Sort(names)
		return names
	}
	list() // fills the kernel's cache
	requests := func() map[string]int { return traceRequests(t, trace) }
	before := requests()
	if !strings.Contains(readTrace(t, trace), "NO_OPENDIR_SUPPORT") {
		t.Skip("the kernel does not announce FUSE_NO_OPENDIR_SUPPORT (Linux < 5.1)")
	}
	for i := 0; i < 3; i++ {
		if got := list(); strings.Join(got, " ") != "a b c sub" {
			t.Fatalf("listing %d of d: %q", i, got)
		}
	}
	after := requests()
	for _, op := range []string{"OPENDIR", "READDIR", "READDIRPLUS", "RELEASEDIR"} {
		if after[op] != before[op] {
			t.Errorf("3 listings of a cached directory sent %d %s requests", after[op]-before[op], op)
		}
	}
	// The first OPENDIR is how the kernel learns: ENOSYS, never again.
	if after["OPENDIR"] > 1 || after["RELEASEDIR"] != 0 {
		t.Errorf("the kernel sent OPENDIR %d times and RELEASEDIR %d times; want at most 1 and 0", after["OPENDIR"], after["RELEASEDIR"])
	}
	// A change made through the mount drops the cached listing.
	writeFile(t, filepath.Join(d, "new"), []byte("x"), 0o644)
	wrMust(t, "rm d/a", os.Remove(filepath.Join(d, "a")))
	if got := list(); strings.Join(got, " ") != "b c new sub" {
		t.Errorf("listing of d after a create and a delete: %q", got)
	}
}

// mountTraced mounts ovlfs in the foreground with -d, its request trace
// going to the file trace.
func mountTraced(t *testing.T, lowers []string, upper, work string) (mnt, trace string) {
	t.Helper()
	mnt = newMountpoint(t)
	trace = filepath.Join(t.TempDir(), "trace")
	tf, err := os.Create(trace)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	cmd := exec.Command(ovlfsBin, "-d", "-o", layerOptions(lowers, upper, work), mnt)
	cmd.Stderr = tf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if isMounted(mnt) {
			unmountFuse(t, mnt)
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !isMounted(mnt) {
		if time.Now().After(deadline) {
			t.Fatalf("ovlfs -d did not mount within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return mnt, trace
}

// traceRequests counts the requests of each opcode in a -d trace.
func traceRequests(t *testing.T, trace string) map[string]int {
	n := map[string]int{}
	for _, line := range strings.Split(readTrace(t, trace), "\n") {
		if _, rest, ok := strings.Cut(line, " rx "); ok {
			if f := strings.Fields(rest); len(f) > 1 {
				n[f[1]]++
			}
		}
	}
	return n
}

func readTrace(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestXattrsAfterListing: the xattrs the kernel asks about for nearly every
// file (SELinux label, file capabilities, ACLs), which ovlfs learns at lookup
// which files lack, read the same after a stat-ing listing (READDIRPLUS) as
// on the kernel overlay, on files and directories that have them and those
// that do not, in lower and upper layers, and after they change through the
// mount.
func TestXattrsAfterListing(t *testing.T) {
	if _, err := exec.LookPath("setfacl"); err != nil {
		t.Skip("setfacl missing (package acl)")
	}
	caps := []byte("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	fill := func(l string) {
		writeFile(t, filepath.Join(l, "d/plain"), []byte("x"), 0o755)
		writeFile(t, filepath.Join(l, "d/big"), bytes.Repeat([]byte("y"), 100<<10), 0o755)
		writeFile(t, filepath.Join(l, "d/capped"), bytes.Repeat([]byte("z"), 100<<10), 0o755)
		setXattr(t, filepath.Join(l, "d/capped"), "security.capability", caps)
		writeFile(t, filepath.Join(l, "d/acl"), []byte("a"), 0o644)
		mkdirs(t, filepath.Join(l, "d/dacl"))
		mkdirs(t, filepath.Join(l, "d/dplain"))
		symlink(t, "plain", filepath.Join(l, "d/link"))
		for _, c := range [][]string{{"-m", "u:1000:r", filepath.Join(l, "d/acl")}, {"-d", "-m", "u:1000:rwx", filepath.Join(l, "d/dacl")}} {
			if out, err := exec.Command("setfacl", c...).CombinedOutput(); err != nil {
				t.Fatalf("setfacl %v: %v: %s", c, err, out)
			}
		}
	}
	names := []string{"plain", "big", "capped", "acl", "dacl", "dplain", "link"}
	keys := []string{"security.selinux", "security.capability", "system.posix_acl_access", "system.posix_acl_default"}
	read := func(m string) map[string]string {
		got := map[string]string{}
		for _, n := range names {
			for _, k := range keys {
				v, err := getXattr(filepath.Join(m, "d", n), k)
				if err != nil {
					got[n+" "+k] = errName(err)
				} else {
					got[n+" "+k] = fmt.Sprintf("%x", v)
				}
			}
		}
		return got
	}
	run := func(m string) map[string]string {
		// ls -l: READDIRPLUS looks every entry up, then each is asked.
		if out, err := exec.Command("ls", "-l", filepath.Join(m, "d")).CombinedOutput(); err != nil {
			t.Fatalf("ls -l: %v: %s", err, out)
		}
		got := read(m)
		// Changes through the mount: a capability set and an ACL dropped.
		setXattr(t, filepath.Join(m, "d/big"), "security.capability", caps)
		if out, err := exec.Command("setfacl", "-b", filepath.Join(m, "d/acl")).CombinedOutput(); err != nil {
			t.Fatalf("setfacl -b: %v: %s", err, out)
		}
		for k, v := range read(m) {
			got["after change: "+k] = v
		}
		return got
	}
	got, want := sideBySide(t, fill, func(_, m string) map[string]string { return run(m) })
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: ovlfs %s, kernel overlay %s", k, got[k], v)
		}
	}
	if want["capped security.capability"] == "ENODATA" || want["dacl system.posix_acl_default"] == "ENODATA" {
		t.Errorf("the kernel overlay shows no capability or default ACL: the test's layers are wrong")
	}
}

// TestLowerAtimeUnchanged: reading files (a small one through the page cache,
// a big one by passthrough as root) and listing directories through the
// mount leaves the access times of the lower layer's inodes alone, as on the
// kernel overlay: a lower layer is never written to. The atimes are set to
// 2001 first, which relatime would otherwise update at the first read.
func TestLowerAtimeUnchanged(t *testing.T) {
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	fill := func(l string) {
		writeFile(t, filepath.Join(l, "d/f"), []byte("data"), 0o644)
		writeFile(t, filepath.Join(l, "d/big"), bytes.Repeat([]byte("b"), 1<<20), 0o644)
		mkdirs(t, filepath.Join(l, "d/sub"))
		for _, p := range []string{"d/f", "d/big", "d/sub", "d"} {
			if err := os.Chtimes(filepath.Join(l, p), old, time.Date(2002, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
				t.Fatal(err)
			}
		}
	}
	run := func(l, m string) map[string]string {
		for _, p := range []string{"d/f", "d/big"} {
			if _, err := os.ReadFile(filepath.Join(m, p)); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []string{"d", "d/sub"} {
			if _, err := readdirNames(filepath.Join(m, p)); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]string{}
		for _, p := range []string{"d/f", "d/big", "d/sub", "d"} {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(l, p), &st); err != nil {
				t.Fatal(err)
			}
			got[p] = time.Unix(st.Atim.Unix()).UTC().Format(time.DateOnly)
		}
		return got
	}
	got, want := sideBySide(t, fill, run)
	for p, k := range want {
		if k != "2001-01-01" {
			t.Errorf("the kernel overlay changed the atime of lower %s to %s: the test's premise is wrong", p, k)
		}
		if got[p] != k {
			t.Errorf("lower %s: atime %s after reads through ovlfs, %s through the kernel overlay", p, got[p], k)
		}
	}
}
