package tests

// TestRelLowerChanged: a lower layer changed directly while mounted, after
// the mount has looked at everything (caches warm). Changes to lower layers
// of a live overlay are undefined behaviour for the kernel overlay too
// (Documentation/filesystems/overlayfs.rst, "Changes to underlying
// filesystems"), so the test does not demand the kernel's view. It demands:
// the daemon lives and the mount answers; no read ever returns bytes that
// are neither the file's whole old content nor its whole new content (no
// mix of the two, no other file's data, no zero fill); a file open before
// the change reads its old or its new content; and it logs, per change, what
// ovlfs and the kernel overlay show (the README's table).

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// relLowerChange is one change made to the lower layer behind the mount.
type relLowerChange struct {
	name     string                           // the path in the lower layer
	what     string                           // for the table
	old, new []byte                           // content before and after (nil: no file)
	apply    func(t *testing.T, lower string) // nil: rewrite in place with new
}

func relLowerChanges() []relLowerChange {
	fill := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	return []relLowerChange{
		{name: "same", what: "rewritten in place, same size", old: fill('a', 8192), new: fill('b', 8192)},
		{name: "grow", what: "rewritten in place, bigger", old: fill('c', 4096), new: fill('d', 20000)},
		{name: "shrink", what: "rewritten in place, smaller", old: fill('e', 20000), new: fill('f', 3000)},
		{name: "renamed", what: "replaced by rename of another file", old: fill('g', 5000), new: fill('h', 7000),
			apply: func(t *testing.T, lower string) {
				tmp := filepath.Join(lower, "renamed.tmp")
				writeFile(t, tmp, bytes.Repeat([]byte{'h'}, 7000), 0o644)
				if err := os.Rename(tmp, filepath.Join(lower, "renamed")); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "deleted", what: "deleted", old: fill('i', 3000),
			apply: func(t *testing.T, lower string) {
				if err := os.Remove(filepath.Join(lower, "deleted")); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "added", what: "added", new: fill('j', 1000),
			apply: func(t *testing.T, lower string) {
				writeFile(t, filepath.Join(lower, "added"), bytes.Repeat([]byte{'j'}, 1000), 0o644)
			}},
		{name: "dir2file", what: "directory replaced by a file", new: fill('k', 600),
			apply: func(t *testing.T, lower string) {
				if err := os.RemoveAll(filepath.Join(lower, "dir2file")); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(lower, "dir2file"), bytes.Repeat([]byte{'k'}, 600), 0o644)
			}},
	}
}

// relLowerSetup makes the lower layer of the test in dir.
func relLowerSetup(t *testing.T, dir string) (lower, upper, work string) {
	lower, upper, work = filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	mkdirs(t, lower)
	mkdirs(t, upper)
	mkdirs(t, work)
	for _, c := range relLowerChanges() {
		if c.old != nil {
			writeFile(t, filepath.Join(lower, c.name), c.old, 0o644)
		}
	}
	mkdirMode(t, filepath.Join(lower, "dir2file"), 0o755)
	writeFile(t, filepath.Join(lower, "dir2file", "child"), []byte("child\n"), 0o644)
	return lower, upper, work
}

// relLowerView is what a mount shows of one changed name.
type relLowerView struct {
	stat, read, openRead string
	bad                  []string // reads that were neither old nor new
}

// relLowerLook reads name through mnt: its stat, a fresh open's content,
// and the content read through fd (opened before the change, -1: none).
func relLowerLook(mnt string, c relLowerChange, fd int) relLowerView {
	var v relLowerView
	judge := func(how string, b []byte, err error) string {
		switch {
		case err != nil:
			return relErrno(err)
		case c.old != nil && bytes.Equal(b, c.old):
			return "old"
		case c.new != nil && bytes.Equal(b, c.new):
			return "new"
		}
		v.bad = append(v.bad, fmt.Sprintf("%s: %d bytes %q", how, len(b), shorten(string(b), 40)))
		return fmt.Sprintf("WRONG (%d bytes)", len(b))
	}
	// Reads first (a stat would refresh what the kernel caches), the fd
	// opened before first of all (a new open may refresh its pages).
	p := filepath.Join(mnt, c.name)
	if fd >= 0 {
		var buf bytes.Buffer
		chunk := make([]byte, 64<<10)
		var err error
		for off := int64(0); ; {
			n, e := unix.Pread(fd, chunk, off)
			if e != nil {
				err = e
				break
			}
			if n == 0 {
				break
			}
			buf.Write(chunk[:n])
			off += int64(n)
		}
		v.openRead = judge("fd opened before", buf.Bytes(), err)
	}
	if b, err := os.ReadFile(p); err == unix.EISDIR || err != nil && strings.Contains(err.Error(), "is a directory") {
		names, err := readdirNames(p)
		v.read = fmt.Sprintf("dir %v %s", names, relErrno(err))
	} else {
		v.read = judge("fresh open", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		v.stat = relErrno(err)
	} else if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		v.stat = "dir"
	} else {
		v.stat = fmt.Sprintf("size %d", st.Size)
	}
	return v
}

// relLowerRun mounts (ovlfs or the kernel), warms every cache, changes the
// lower layer, and returns what the mount then shows, per change.
func relLowerRun(t *testing.T, kernel bool) (map[string]relLowerView, []string) {
	dir := t.TempDir()
	lower, upper, work := relLowerSetup(t, dir)
	var mnt string
	pid := 0
	if kernel {
		mnt = mountKernel(t, []string{lower}, upper, work)
	} else {
		mnt = mountOvlfs(t, []string{lower}, upper, work)
		pid = relDaemon(t, mnt)
	}
	changes := relLowerChanges()
	// Warm: list, stat and read everything, look up the name that will be
	// added (a negative entry), keep one fd open per file.
	fds := map[string]int{}
	readdirNames(mnt)
	for _, c := range changes {
		v := relLowerLook(mnt, c, -1)
		if c.old != nil && v.read != "old" {
			t.Fatalf("%s before the change: %+v", c.name, v)
		}
		if c.old != nil {
			fd, err := unix.Open(filepath.Join(mnt, c.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			fds[c.name] = fd
			t.Cleanup(func() { unix.Close(fd) })
		}
	}
	readdirNames(filepath.Join(mnt, "dir2file"))
	for _, c := range changes {
		// The reads left atime stale, so that the next stat would ask
		// the daemon again: refresh it now, as a long-running reader's
		// kernel would have.
		var st unix.Stat_t
		unix.Lstat(filepath.Join(mnt, c.name), &st)
	}
	for _, c := range changes {
		if c.apply != nil {
			c.apply(t, lower)
		} else {
			inPlace(t, lower, c.name, c.new)
		}
	}
	for _, fd := range fds {
		// Memory pressure: the kernel drops all but the first page it
		// caches of each file.
		if err := unix.Fadvise(fd, 4096, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]relLowerView{}
	for _, c := range changes {
		fd, ok := fds[c.name]
		if !ok {
			fd = -1
		}
		out[c.name] = relLowerLook(mnt, c, fd)
	}
	names, err := readdirNames(mnt)
	if err != nil {
		t.Errorf("readdir of the mount root after the changes: %v", err)
	}
	sort.Strings(names)
	if !kernel && (!processAlive(pid) || !isMounted(mnt)) {
		t.Fatalf("after the lower layer changed the daemon (pid %d) is gone or %s is not mounted", pid, mnt)
	}
	return out, names
}

func inPlace(t *testing.T, lower, name string, data []byte) {
	// The same inode: truncate and write, as an editor that does not rename.
	if err := os.WriteFile(filepath.Join(lower, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRelLowerChanged(t *testing.T) {
	relRequire(t)
	ov, ovNames := relLowerRun(t, false)
	kv, kNames := relLowerRun(t, true)
	tried, ok := 0, 0
	var rows []string
	for _, c := range relLowerChanges() {
		o, k := ov[c.name], kv[c.name]
		tried++
		if len(o.bad) == 0 {
			ok++
		} else {
			t.Errorf("ovlfs served wrong bytes after the lower file %q was %s: %s", c.name, c.what, strings.Join(o.bad, "; "))
		}
		rows = append(rows, fmt.Sprintf("%-36s ovlfs: stat %s, open %s, fd %s | kernel: stat %s, open %s, fd %s",
			c.what, o.stat, o.read, orDash(o.openRead), k.stat, k.read, orDash(k.openRead)))
	}
	for _, r := range rows {
		t.Log(r)
	}
	t.Logf("listing after: ovlfs %v, kernel %v", ovNames, kNames)
	relRow(t, "lower layer changed while mounted (7 changes)", tried, ok, tried-ok,
		"daemon alive; every read is the whole old or the whole new content")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
