package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTruncDropsSetID: open(O_TRUNC) and writes by a user without
// CAP_FSETID drop set-ID bits of lower files as on the kernel overlay (the
// set-user-ID bit; the set-group-ID bit of a group-executable file, or of a
// group the caller is not in), and root's own O_TRUNC keeps them. The FUSE
// kernel module leaves the O_TRUNC case to the daemon.
func TestTruncDropsSetID(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv missing (util-linux)")
	}
	modes := map[string]os.FileMode{
		"u":     0o777 | os.ModeSetuid,
		"gx":    0o777 | os.ModeSetgid,
		"gnx":   0o767 | os.ModeSetgid,
		"both":  0o777 | os.ModeSetuid | os.ModeSetgid,
		"root":  0o777 | os.ModeSetuid | os.ModeSetgid,
		"plain": 0o777,
		"w":     0o777 | os.ModeSetuid,
	}
	fill := func(l string) {
		for name, m := range modes {
			p := filepath.Join(l, name)
			writeFile(t, p, []byte("content\n"), 0o644)
			if err := os.Chmod(p, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	script := `cd "$1" &&
for f in u gx gnx both plain; do setpriv --reuid=65534 --regid=65534 --clear-groups -- sh -c ": > $f"; done &&
: > root &&
setpriv --reuid=65534 --regid=65534 --clear-groups -- sh -c 'printf x >> w' &&
stat -c '%n %A %s' u gx gnx both root plain w`
	run := func(mnt string) string {
		t.Helper()
		if err := os.Chmod(filepath.Dir(mnt), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("sh", "-c", script, "sh", mnt).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	got, want := sideBySide(t, fill, func(_, m string) string { return run(m) })
	if !strings.Contains(want, "u -rwxrwxrwx 0") || !strings.Contains(want, "root -rwsrwsrwx 0") {
		t.Fatalf("the kernel overlay shows\n%s\nthe test's premise is wrong", want)
	}
	if got != want {
		t.Errorf("after O_TRUNC and a write by uid 65534 (and an O_TRUNC by root of root), ovlfs shows\n%s\nthe kernel overlay\n%s", got, want)
	}
}
