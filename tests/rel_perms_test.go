package tests

// TestRelPerms: a mount made by root with allow_other,default_permissions,
// used by an unprivileged user (setpriv --reuid 65534): what the modes forbid
// fails, setuid files owned by others cannot be made, trusted.* and
// security.* xattrs cannot be set, and overlay metadata cannot be forged
// (neither by the user nor by root through the mount: after a remount, by
// ovlfs and by the kernel, the directories are still merged, not opaque).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func relAsNobody(dir, script string) (string, error) {
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestRelPerms(t *testing.T) {
	relRequire(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("SKIP: setpriv missing (util-linux)")
	}
	if _, err := exec.LookPath("setfattr"); err != nil {
		t.Skip("SKIP: setfattr missing (apt-get install attr)")
	}
	dir := t.TempDir()
	chmod(t, dir, 0o755)
	chmod(t, filepath.Dir(dir), 0o755)
	lower := filepath.Join(dir, "lower")
	writeFile(t, filepath.Join(lower, "secret"), []byte("SECRET"), 0o600)
	writeFile(t, filepath.Join(lower, "pub"), []byte("public"), 0o644)
	mkdirMode(t, filepath.Join(lower, "rootdir"), 0o755)
	writeFile(t, filepath.Join(lower, "privdir", "file"), []byte("private"), 0o644)
	chmod(t, filepath.Join(lower, "privdir"), 0o700)
	writeFile(t, filepath.Join(lower, "sticky", "rootfile"), []byte("root's"), 0o666)
	chmod(t, filepath.Join(lower, "sticky"), 0o1777)
	writeFile(t, filepath.Join(lower, "suidw"), []byte("#!/bin/sh\n"), 0o4777)
	mkdirMode(t, filepath.Join(lower, "shared"), 0o777)
	writeFile(t, filepath.Join(lower, "opq", "a"), []byte("a"), 0o644)
	writeFile(t, filepath.Join(lower, "opq2", "b"), []byte("b"), 0o644)
	chown(t, filepath.Join(lower, "opq"), 65534, 65534)
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	mkdirs(t, upper)
	mkdirs(t, work)
	mnt := mountOvlfs(t, []string{lower}, upper, work, "allow_other", "default_permissions")
	chmod(t, filepath.Dir(mnt), 0o755)
	chmod(t, filepath.Dir(filepath.Dir(mnt)), 0o755)

	// Positive controls: what the modes allow works.
	for _, s := range []string{"cat pub", "ls shared", "echo mine > shared/mine && cat shared/mine", "chmod 4755 shared/mine", "setfattr -n user.ok -v 1 shared/mine"} {
		if out, err := relAsNobody(mnt, s); err != nil {
			t.Fatalf("as nobody, %q should work: %v %s", s, err, out)
		}
	}
	denied := []string{
		"cat secret",
		"echo x >> pub",
		"truncate -s 0 pub",
		"touch -d 2000-01-01 pub",
		"touch rootdir/new",
		"mkdir rootdir/new",
		"ls privdir",
		"cat privdir/file",
		"rm -f sticky/rootfile",
		"mv sticky/rootfile sticky/moved",
		"chmod u+s pub",
		"chmod 4755 secret",
		"chown 0 shared/mine",
		"chown 1000 shared/mine",
		"chgrp 0 shared/mine",
		"ln secret shared/hardlink",
		"mknod shared/dev c 1 3",
		"setfattr -n trusted.foo -v x shared/mine",
		"setfattr -n security.foo -v x shared/mine",
		"setfattr -n security.capability -v 0x0100000200000000000000000000000000000000 shared/mine",
		"setfattr -n trusted.overlay.opaque -v y opq",
		"setfattr -n trusted.overlay.redirect -v /opq2 opq",
		"setfattr -n user.ok -v 1 pub",
	}
	tried, refused := 0, 0
	for _, s := range denied {
		tried++
		if out, err := relAsNobody(mnt, s); err == nil {
			t.Errorf("as nobody, %q succeeded (%s); the modes forbid it", s, out)
		} else {
			refused++
		}
	}
	// Forging attempts that may be accepted as plain user xattrs, but must
	// never become overlay metadata.
	for _, s := range []string{
		"setfattr -n user.overlay.opaque -v y opq",
		"setfattr -n user.fuseoverlayfs.opaque -v y opq",
		"setfattr -n user.overlay.redirect -v /opq2 opq",
		"setfattr -n user.overlay.whiteout -v y opq/a",
	} {
		out, err := relAsNobody(mnt, s)
		t.Logf("as nobody, %q: %v %s", s, err, out)
	}
	// Root through the mount: trusted.overlay.* is stored escaped.
	for _, k := range []string{"trusted.overlay.opaque", "trusted.overlay.redirect"} {
		v := "y"
		if strings.HasSuffix(k, "redirect") {
			v = "/opq"
		}
		if err := unix.Setxattr(filepath.Join(mnt, "opq2"), k, []byte(v), 0); err != nil {
			t.Logf("root setxattr %s on opq2: %v", k, err)
		}
	}
	// Writing to a world-writable setuid file clears its setuid bit.
	tried++
	if out, err := relAsNobody(mnt, "echo x >> suidw"); err != nil {
		t.Errorf("as nobody, append to the 04777 file: %v %s", err, out)
	} else if st, err := os.Stat(filepath.Join(mnt, "suidw")); err != nil || st.Mode()&os.ModeSetuid != 0 {
		t.Errorf("after a write by nobody, suidw is %v (%v): the setuid bit of root's file stays", st.Mode(), err)
	} else {
		refused++
	}
	// nobody's own setuid file stays owned by nobody.
	tried++
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(mnt, "shared", "mine"), &st); err != nil || st.Uid != 65534 {
		t.Errorf("shared/mine: uid %d, %v", st.Uid, err)
	} else {
		refused++
	}
	// Nothing readable leaked into files nobody could read.
	unmountFuse(t, mnt)
	checkMerged := func(who, m string) {
		tried++
		bad := ""
		for _, p := range []string{"opq/a", "opq2/b"} {
			if _, err := os.Lstat(filepath.Join(m, p)); err != nil {
				bad += fmt.Sprintf(" %s: %v;", p, err)
			}
		}
		if names, _ := readdirNames(filepath.Join(m, "opq2")); len(names) != 1 {
			bad += fmt.Sprintf(" opq2 lists %q;", names)
		}
		if bad != "" {
			t.Errorf("%s after the remount: forged overlay metadata took effect:%s", who, bad)
		} else {
			refused++
		}
	}
	m2 := mountOvlfs(t, []string{lower}, upper, work)
	checkMerged("ovlfs", m2)
	unmountFuse(t, m2)
	k := mountKernel(t, []string{lower}, upper, work, wrKernelOpts()...)
	checkMerged("kernel", k)
	relRow(t, "unprivileged user on allow_other,default_permissions", tried, refused, tried-refused,
		fmt.Sprintf("%d denied ops, setuid kill on write, forged overlay xattrs inert (ovlfs+kernel)", len(denied)))
}
