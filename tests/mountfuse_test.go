package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMountTypeFuseOvlfs: `mount -t fuse.ovlfs SOURCE MNT -o ...` (what an
// fstab line does) has mount(8) run `mount.fuse3 SOURCE MNT -t ovlfs -o ...`,
// which runs `ovlfs SOURCE MNT -o ...` from its PATH. mount(8) runs helpers
// with a standard PATH (where `make install` puts ovlfs); the test calls
// mount.fuse3 itself, with the built binary first on PATH, so as not to
// install anything on the host.
func TestMountTypeFuseOvlfs(t *testing.T) {
	requireMount(t)
	if ovlfsBuildErr != nil {
		t.Fatal(ovlfsBuildErr)
	}
	if _, err := exec.LookPath("mount.fuse3"); err != nil {
		t.Skip("SKIP: mount.fuse3 (package fuse3) is missing")
	}
	dir := t.TempDir()
	bindir, lower, upper, work := filepath.Join(dir, "bin"), filepath.Join(dir, "l"), filepath.Join(dir, "u"), filepath.Join(dir, "w")
	for _, d := range []string{bindir, lower, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("from fstab\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(ovlfsBin, filepath.Join(bindir, "ovlfs")); err != nil {
		t.Fatal(err)
	}
	mnt := newMountpoint(t)
	cmd := exec.Command("mount.fuse3", "ovlfs", mnt, "-t", "ovlfs", "-o",
		"lowerdir="+escapeLayer(lower)+",upperdir="+escapeLayer(upper)+",workdir="+escapeLayer(work)+",nodev,noatime")
	cmd.Env = append(os.Environ(), "PATH="+bindir+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount.fuse3 ovlfs MNT -t ovlfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { unmountFuse(t, mnt) })
	got, err := os.ReadFile(filepath.Join(mnt, "f"))
	if err != nil || string(got) != "from fstab\n" {
		t.Fatalf("%s/f: %q, %v", mnt, got, err)
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	var line string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == mnt {
			line = l
		}
	}
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "ovlfs" || f[2] != "fuse.ovlfs" || !strings.Contains(f[3], "nodev") || !strings.Contains(f[3], "noatime") {
		t.Errorf("/proc/self/mounts: want source ovlfs, type fuse.ovlfs, nodev and noatime; got %q", line)
	}
	if err := os.WriteFile(filepath.Join(mnt, "g"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(upper, "g")); err != nil {
		t.Errorf("a write through the fstab-style mount did not reach upperdir: %v", err)
	}
}
