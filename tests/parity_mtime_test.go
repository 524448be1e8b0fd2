package tests

// Attributes shown after every write path are current (xfstests generic/080,
// 215): the merged view shows the mtime and size the upper file has right
// after write(2), pwrite(2), a store through a shared mapping (after msync)
// and ftruncate, also while the file stays open.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMtimeAfterWrites(t *testing.T) {
	l, u, w := wrLayers(t, func(l string) {
		writeFile(t, filepath.Join(l, "f"), make([]byte, 1<<20), 0o644)
	})
	m := mountOvlfs(t, []string{l}, u, w)
	p := filepath.Join(m, "f")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	wrMust(t, "open", err)
	defer f.Close()
	data, err := unix.Mmap(int(f.Fd()), 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	wrMust(t, "mmap", err)
	defer unix.Munmap(data)
	steps := []struct {
		name string
		do   func() error
	}{
		{"write", func() error { _, err := f.Write([]byte("hello")); return err }},
		{"pwrite", func() error { _, err := f.WriteAt([]byte("there"), 4096); return err }},
		{"mmap store", func() error { data[8192] = 'x'; return unix.Msync(data, unix.MS_SYNC) }},
		{"ftruncate", func() error { return f.Truncate(2 << 20) }},
	}
	for _, s := range steps {
		var before unix.Stat_t
		wrMust(t, "stat", unix.Stat(p, &before))
		time.Sleep(20 * time.Millisecond) // mtime must be able to move
		wrMust(t, s.name, s.do())
		var merged, upper unix.Stat_t
		wrMust(t, "stat", unix.Stat(p, &merged))
		wrMust(t, "stat upper", unix.Stat(filepath.Join(u, "f"), &upper))
		if merged.Mtim != upper.Mtim || merged.Size != upper.Size {
			t.Errorf("after %s: merged view mtime %v size %d; upper file mtime %v size %d", s.name,
				time.Unix(merged.Mtim.Unix()), merged.Size, time.Unix(upper.Mtim.Unix()), upper.Size)
		}
	}
}

// childDo runs `what` with args in a new process (the test binary itself,
// see TestMain), as another program of a test would.
func childDo(t *testing.T, what string, args ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "OVLFS_TEST_CHILD="+what)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child %s %v: %v\n%s", what, args, err, out)
	}
}

// runChild is the child's side of childDo.
func runChild(what string, args []string) int {
	switch what {
	case "mmap-write": // args: FILE; store one byte through a shared mapping
		f, err := os.OpenFile(args[0], os.O_RDWR, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		data, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		data[0] = 'x'
		return 0 // the mapping goes with the process, as xfs_io's does
	}
	fmt.Fprintln(os.Stderr, "unknown child", what)
	return 2
}

// TestMtimeAfterMmapOfCachedFile: attributes cached before a file is opened
// for writing are not shown after another process stores through a shared
// mapping (xfstests generic/080: stat, mmap-write in another process, stat).
func TestMtimeAfterMmapOfCachedFile(t *testing.T) {
	l, u, w := wrLayers(t, nil)
	m := mountOvlfs(t, []string{l}, u, w)
	p := filepath.Join(m, "f")
	writeFile(t, p, make([]byte, 4096), 0o644)
	// The kernel sends RELEASE after close returns: give ovlfs the time to
	// see the writer go, so that this stat's reply is cached as usual.
	time.Sleep(200 * time.Millisecond)
	var before unix.Stat_t
	wrMust(t, "stat", unix.Stat(p, &before)) // cached by the kernel now
	time.Sleep(1100 * time.Millisecond)      // a new mtime second
	childDo(t, "mmap-write", p)
	// stat(1) right after, as the test does.
	out, err := exec.Command("stat", "-c", "%.9Y %.9Z", p, filepath.Join(u, "f")).Output()
	wrMust(t, "stat", err)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("stat: %q", out)
	}
	if lines[1] == fmt.Sprintf("%d.%09d %d.%09d", before.Mtim.Sec, before.Mtim.Nsec, before.Ctim.Sec, before.Ctim.Nsec) {
		t.Fatalf("the store did not move the upper file's times either (%s)", lines[1])
	}
	if lines[0] != lines[1] {
		t.Errorf("after a store through a shared mapping: merged view mtime, ctime %s; upper file %s", lines[0], lines[1])
	}
}
