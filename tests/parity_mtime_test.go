package tests

// Attributes shown after every write path are current (xfstests generic/080,
// 215): the merged view shows the mtime and size the upper file has right
// after write(2), pwrite(2), a store through a shared mapping (after msync)
// and ftruncate, also while the file stays open.

import (
	"os"
	"path/filepath"
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
