package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUnmountReleasesLayers: right after the overlay is unmounted (by
// fusermount3 -u or umount), the filesystem holding its layers unmounts
// without EBUSY, every time, as it does after the kernel overlay (scripts
// unmount the lower filesystem right after the overlay). The daemon may still
// be on its way out; the layers it holds must not pin the caller's mount of
// their filesystem.
func TestUnmountReleasesLayers(t *testing.T) {
	requireMount(t)
	dir := t.TempDir()
	fsdir := filepath.Join(dir, "fs")
	mkdirs(t, fsdir)
	const runs = 30
	for i := range runs {
		wrMust(t, "mount tmpfs", unix.Mount("tmpfs", fsdir, "tmpfs", 0, "size=16m"))
		mounted := true
		l, u, w := filepath.Join(fsdir, "l"), filepath.Join(fsdir, "u"), filepath.Join(fsdir, "w")
		for _, d := range []string{l, u, w, filepath.Join(l, "d")} {
			mkdirs(t, d)
		}
		big := make([]byte, 256<<10)
		writeFile(t, filepath.Join(l, "big"), big, 0o644)
		writeFile(t, filepath.Join(l, "d", "small"), []byte("small"), 0o644)
		m := mountOvlfs(t, []string{l}, u, w)
		work(t, m)
		var err error
		if i%2 == 0 {
			if out, e := exec.Command("fusermount3", "-u", m).CombinedOutput(); e != nil {
				t.Fatalf("fusermount3 -u: %v %s", e, out)
			}
		} else {
			wrMust(t, "umount overlay", unix.Unmount(m, 0))
		}
		err = unix.Unmount(fsdir, 0)
		if err != nil {
			t.Errorf("run %d: umount of the layers' filesystem right after the overlay's: %v", i, err)
		} else {
			mounted = false
		}
		unmountFuse(t, m) // waits for the daemon
		if mounted {
			wrMust(t, "umount tmpfs after the daemon", unix.Unmount(fsdir, unix.MNT_DETACH))
		}
	}
}

// work does IO through the mount: reads, a copy-up, a create, writes and
// reads through shared and private mappings, a directory walk.
func work(t *testing.T, m string) {
	wrMust(t, "read", func() error { _, err := os.ReadFile(filepath.Join(m, "d", "small")); return err }())
	wrMust(t, "create", os.WriteFile(filepath.Join(m, "new"), []byte("new"), 0o644))
	wrMust(t, "append", func() error {
		f, err := os.OpenFile(filepath.Join(m, "d", "small"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		f.WriteString("more")
		return f.Close()
	}())
	for _, name := range []string{"big", "new"} {
		f, err := os.OpenFile(filepath.Join(m, name), os.O_RDWR, 0)
		wrMust(t, "open "+name, err)
		mem, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		wrMust(t, "mmap "+name, err)
		mem[0] = 'x'
		wrMust(t, "msync", unix.Msync(mem, unix.MS_SYNC))
		wrMust(t, "munmap", unix.Munmap(mem))
		f.Close()
	}
	f, err := os.Open(filepath.Join(m, "big"))
	wrMust(t, "open big", err)
	mem, err := unix.Mmap(int(f.Fd()), 0, 256<<10, unix.PROT_READ, unix.MAP_PRIVATE)
	wrMust(t, "mmap private", err)
	_ = mem[200<<10]
	unix.Munmap(mem)
	f.Close()
	for i := range 5 {
		wrMust(t, "mkdir", os.Mkdir(filepath.Join(m, "d", "n"+strconv.Itoa(i)), 0o755))
	}
	readdirNames(filepath.Join(m, "d"))
}
