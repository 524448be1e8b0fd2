package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The unprivileged user the rootless tests run ovlfs as.
const rootlessUID = 65534

// rootlessSetup makes a layer set owned by an ordinary user (lower with a file
// and a directory, empty upper and work, a mount point) and a copy of the binary
// that user may run. It skips when ordinary users cannot use FUSE here.
func rootlessSetup(t *testing.T) (dir, bin string) {
	t.Helper()
	requireMount(t)
	if ovlfsBuildErr != nil {
		t.Fatal(ovlfsBuildErr)
	}
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil || st.Mode&0o006 != 0o006 {
		t.Skip("SKIP: /dev/fuse is not usable by ordinary users (distributions ship it 0666; `make deps` sets that)")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("SKIP: setpriv (util-linux) is missing")
	}
	dir, err := os.MkdirTemp("", "ovlfs-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"l", "l/d", "u", "w", "m"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"l/f", "l/d/x"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("lower "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(ovlfsBin)
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "ovlfs")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "-R", "65534:65534", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// asUser runs a shell script as the unprivileged user, in dir.
func asUser(t *testing.T, dir, script string) string {
	t.Helper()
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		"sh", "-ec", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as uid %d: %s: %v\n%s", rootlessUID, script, err, out)
	}
	return string(out)
}

// checkUserFormat checks that the upper layer left by an unprivileged mount is
// in the kernel's userxattr format: char 0/0 whiteouts, user.overlay.opaque.
func checkUserFormat(t *testing.T, dir string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "u/f"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("u/f: want a char 0/0 whiteout, got mode %o rdev %d err %v", st.Mode, st.Rdev, err)
	}
	v, err := getXattr(filepath.Join(dir, "u/d"), "user.overlay.opaque")
	if err != nil || string(v) != "y" {
		t.Errorf("u/d: want user.overlay.opaque=y, got %q, %v", v, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "u/d/x")); err == nil {
		t.Errorf("u/d/x: the lower file shows through the new opaque directory")
	}
	got, err := os.ReadFile(filepath.Join(dir, "u/new"))
	if err != nil || string(got) != "new\n" {
		t.Errorf("u/new: %q, %v", got, err)
	}
}

const rootlessOps = `
cat m/f >/dev/null
echo new > m/new
rm m/f
rm -r m/d
mkdir m/d
test ! -e m/d/x
`

// TestRootlessFusermount mounts as an ordinary user, through the setuid
// fusermount3, and checks the upper layer is in userxattr format.
func TestRootlessFusermount(t *testing.T) {
	dir, bin := rootlessSetup(t)
	asUser(t, dir, bin+" -o lowerdir=l,upperdir=u,workdir=w m")
	t.Cleanup(func() {
		if isMounted(filepath.Join(dir, "m")) {
			exec.Command("umount", "-l", filepath.Join(dir, "m")).Run()
		}
	})
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var line string
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, " "+filepath.Join(dir, "m")+" ") {
			line = l
		}
	}
	if !strings.Contains(line, "fuse.ovlfs") || !strings.Contains(line, "user_id=65534") {
		t.Errorf("mountinfo: want a fuse.ovlfs mount of uid 65534, got %q", line)
	}
	asUser(t, dir, rootlessOps+"fusermount3 -u m\n")
	checkUserFormat(t, dir)
}

// TestRootlessUserns mounts as root of a user namespace made by an ordinary
// user (as rootless Podman does): no fusermount3, no trusted.* xattrs.
func TestRootlessUserns(t *testing.T) {
	dir, bin := rootlessSetup(t)
	if out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		"unshare", "-Urm", "true").CombinedOutput(); err != nil {
		t.Skipf("SKIP: ordinary users cannot make user namespaces here: %v %s", err, out)
	}
	asUser(t, dir, "unshare -Urm sh -ec '"+bin+" -o lowerdir=l,upperdir=u,workdir=w m\n"+
		"grep -q \" $PWD/m fuse.ovlfs \" /proc/self/mounts\n"+rootlessOps+"umount m'")
	checkUserFormat(t, dir)
	names, err := listXattrs(filepath.Join(dir, "u/d"), func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "trusted.") {
			t.Errorf("u/d has %s: a user namespace cannot write trusted.*", n)
		}
	}
}
