package tests

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTmpfile: open(O_TMPFILE) through the mount makes an unnamed file that
// shows nowhere until linkat gives it a name; then it is an ordinary upper
// file. fsync of a directory through the mount works.
func TestTmpfile(t *testing.T) {
	dir := t.TempDir()
	lower, upper, work := filepath.Join(dir, "l"), filepath.Join(dir, "u"), filepath.Join(dir, "w")
	for _, d := range []string{lower, filepath.Join(lower, "d"), upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt := mountOvlfs(t, []string{lower}, upper, work)
	fd, err := unix.Open(filepath.Join(mnt, "d"), unix.O_TMPFILE|unix.O_RDWR, 0o640)
	if err != nil {
		t.Fatalf("open O_TMPFILE: %v", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("unnamed")); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != 7 || st.Nlink != 0 {
		t.Fatalf("fstat of the unnamed file: size %d nlink %d, %v", st.Size, st.Nlink, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(mnt, "d")); len(ents) != 0 {
		t.Fatalf("the unnamed file is listed: %v", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(upper, "d")); len(ents) != 0 {
		t.Fatalf("the unnamed file has a name in upper: %v", ents)
	}
	dst := filepath.Join(mnt, "d", "named")
	if err := unix.Linkat(fd, "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH); err != nil {
		t.Fatalf("linkat AT_EMPTY_PATH: %v", err)
	}
	for _, p := range []string{dst, filepath.Join(upper, "d", "named")} {
		got, err := os.ReadFile(p)
		if err != nil || string(got) != "unnamed" {
			t.Errorf("%s: %q, %v", p, got, err)
		}
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("%s: %v, %v", dst, fi, err)
	}
	dfd, err := unix.Open(filepath.Join(mnt, "d"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	if err := unix.Fsync(dfd); err != nil {
		t.Errorf("fsync of a directory: %v", err)
	}
}
