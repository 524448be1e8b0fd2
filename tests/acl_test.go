package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// aclScript sets access and default ACLs through a mount, creates under the
// default ACL, and prints what getfacl and two unprivileged users see.
const aclScript = `
set -e
M=$1
setfacl -m u:1000:rx M_d 2>&1
setfacl -m u:1000:r M_d/f
setfacl -d -m u:1000:rwx M_d
mkdir M_d/sub
touch M_d/new
chmod 0640 M_d/new
for p in d d/f d/sub d/new; do echo "== $p"; getfacl -p -c "$M/$p" 2>&1; done
for u in 1000 1001; do
  if setpriv --reuid=$u --regid=$u --clear-groups cat "$M/d/f" >/dev/null 2>&1; then echo "uid $u reads d/f"; else echo "uid $u cannot read d/f"; fi
done
`

func runACL(t *testing.T, mnt string) string {
	t.Helper()
	// The users must reach the mount point.
	if err := os.Chmod(filepath.Dir(mnt), 0o755); err != nil {
		t.Fatal(err)
	}
	script := strings.ReplaceAll(aclScript, "M_d", `"$M/d"`)
	out, err := exec.Command("sh", "-c", script, "sh", mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("acl script on %s: %v\n%s", mnt, err, out)
	}
	return strings.ReplaceAll(string(out), mnt, "MNT")
}

func aclLayers(t *testing.T) (lower, upper, work string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lower, upper, work = filepath.Join(dir, "l"), filepath.Join(dir, "u"), filepath.Join(dir, "w")
	for _, d := range []string{lower, filepath.Join(lower, "d"), upper, work} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(lower, 0o755); err != nil || os.Chmod(upper, 0o755) != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lower, "d", "f"), []byte("secret"), 0o640); err != nil {
		t.Fatal(err)
	}
	return lower, upper, work
}

// TestACL: POSIX ACLs set through ovlfs are enforced by the kernel and
// inherited from default ACLs exactly as through the kernel overlay.
func TestACL(t *testing.T) {
	requireMount(t)
	for _, tool := range []string{"setfacl", "getfacl", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP: %s is missing (package acl / util-linux; make deps installs it)", tool)
		}
	}
	// The test dirs must be reachable by the unprivileged users.
	for p := filepath.Dir(t.TempDir()); p != "/"; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
			os.Chmod(p, fi.Mode().Perm()|0o005)
		}
	}
	l1, u1, w1 := aclLayers(t)
	kmnt := mountKernel(t, []string{l1}, u1, w1)
	want := runACL(t, kmnt)
	l2, u2, w2 := aclLayers(t)
	omnt := mountOvlfs(t, []string{l2}, u2, w2, "allow_other")
	got := runACL(t, omnt)
	if got != want {
		t.Errorf("ACLs through ovlfs differ from the kernel overlay\n--- kernel:\n%s\n--- ovlfs:\n%s", want, got)
	}
	if !strings.Contains(got, "uid 1000 reads d/f") || !strings.Contains(got, "uid 1001 cannot read d/f") {
		t.Errorf("the ACL is not enforced:\n%s", got)
	}
}
