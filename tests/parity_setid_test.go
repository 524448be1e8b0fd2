package tests

// Set-ID bits after changes by a caller without CAP_FSETID, side by side with
// the kernel overlay (xfstests generic/375, 683, 684, 685): fallocate, hole
// punching and zeroing drop S_ISUID, and S_ISGID where the file is
// group-executable or the caller is outside its group; setfacl by an owner
// outside the file's group drops S_ISGID as chmod does.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSetIDDropped(t *testing.T) {
	if _, err := exec.LookPath("setfacl"); err != nil {
		t.Skip("SKIP: setfacl is missing")
	}
	type fcase struct {
		name  string
		mode  uint32
		owner int
		cmd   string
	}
	var cases []fcase
	for _, m := range []uint32{0o6666, 0o6676, 0o6766, 0o6777} {
		for _, op := range []string{"fallocate -l 65536 $f", "fallocate -p -o 0 -l 4096 $f", "fallocate -z -o 0 -l 4096 $f", "echo x >> $f"} {
			cases = append(cases, fcase{fmt.Sprintf("%04o %s", m, strings.Fields(op)[0]+" "+strings.Fields(op)[1]), m, 0, op})
		}
	}
	cases = append(cases,
		fcase{"setfacl by owner outside the group", 0o2755, 65534, "setfacl -m u::rwx,g::rwx,o::rwx $f"},
		fcase{"chmod by owner outside the group", 0o2755, 65534, "chmod 2777 $f"},
	)
	run := func(m string) []string {
		var out []string
		for i, c := range cases {
			f := filepath.Join(m, fmt.Sprintf("f%d", i))
			wrMust(t, "create", os.WriteFile(f, make([]byte, 8192), 0o644))
			wrMust(t, "chown", os.Chown(f, c.owner, 0))
			wrMust(t, "chmod", unix.Chmod(f, c.mode))
			cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", c.cmd)
			cmd.Env = append(os.Environ(), "f="+f)
			res, err := cmd.CombinedOutput()
			var st unix.Stat_t
			wrMust(t, "stat", unix.Stat(f, &st))
			out = append(out, fmt.Sprintf("%s: %v %s -> %04o", c.name, err, strings.TrimSpace(string(res)), st.Mode&0o7777))
		}
		return out
	}
	ov, kern := sideBySide(t, nil, func(_, m string) []string {
		// The test's temp dirs are 0700: let the ordinary user reach the mount.
		for d := filepath.Dir(m); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			wrMust(t, "chmod", os.Chmod(d, 0o755))
		}
		wrMust(t, "chmod mount root", os.Chmod(m, 0o777))
		return run(m)
	})
	for i := range kern {
		if ov[i] != kern[i] {
			t.Errorf("ovlfs %s\n kernel %s", ov[i], kern[i])
		}
	}
}
