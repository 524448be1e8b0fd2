package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runWithFuseConf runs script as root in a private mount namespace where conf
// is bind-mounted over /etc/fuse.conf (the host's file is never touched), in
// dir, and returns its output and error.
func runWithFuseConf(t *testing.T, dir, conf, script string) (string, error) {
	t.Helper()
	p := filepath.Join(dir, "fuse.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-ec",
		"mount --bind "+p+" /etc/fuse.conf\n"+script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const asNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups -- "

// TestRootlessAllowOther: an ordinary user gets allow_other only where
// /etc/fuse.conf has user_allow_other; otherwise one clear ovlfs: line, exit
// status 1 and nothing mounted.
func TestRootlessAllowOther(t *testing.T) {
	dir, bin := rootlessSetup(t)
	if _, err := os.Stat("/etc/fuse.conf"); err != nil {
		t.Skip("SKIP: no /etc/fuse.conf to bind a test copy over")
	}
	mount := asNobody + bin + " -o lowerdir=l,upperdir=u,workdir=w,allow_other m"

	t.Run("refused", func(t *testing.T) {
		out, err := runWithFuseConf(t, dir, "#user_allow_other\nmount_max = 1000\n",
			"rc=0; "+mount+" 2>err || rc=$?\n"+
				"if grep -q \" $PWD/m \" /proc/self/mounts; then umount -l m; echo MOUNTED; fi\n"+
				"cat err; echo rc=$rc")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "ovlfs: allow_other") ||
			!strings.Contains(lines[0], "user_allow_other") || lines[1] != "rc=1" {
			t.Errorf("want one ovlfs: line naming user_allow_other and rc=1, got:\n%s", out)
		}
	})

	t.Run("allowed", func(t *testing.T) {
		out, err := runWithFuseConf(t, dir, "# test copy\nuser_allow_other\n",
			mount+"\ntrap 'umount m' EXIT\n"+
				"grep \" $PWD/m \" /proc/self/mounts | grep -q allow_other\n"+
				"cat m/f\n"+ // root is another user of this mount
				"setpriv --reuid=1000 --regid=1000 --clear-groups -- cat m/d/x")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out != "lower l/f\nlower l/d/x\n" {
			t.Errorf("other users read through the mount:\n%s", out)
		}
	})
	if isMounted(filepath.Join(dir, "m")) {
		t.Errorf("%s/m is still mounted", dir)
	}
}
