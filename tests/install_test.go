package tests

// make install and make uninstall: every file where mount(8), man and the
// shells look for it, and nothing left after uninstall; the mount(8) helper
// mounts with the installed ovlfs, whose daemon is named ovlfs.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// makeIn runs make in the repository with args and fails the test on error.
func makeIn(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-C", "..", "--no-print-directory"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestInstall(t *testing.T) {
	for _, tool := range []string{"make", "man", "zsh", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP: %s is missing (make deps installs it)", tool)
		}
	}
	dest := t.TempDir()
	makeIn(t, "install", "DESTDIR="+dest, "PREFIX=/usr/local")
	want := map[string]os.FileMode{
		"usr/local/bin/ovlfs":                                0o755,
		"usr/local/bin/ovlctl":                               0o755,
		"sbin/mount.fuse.ovlfs":                              0o755,
		"usr/local/share/man/man1/ovlfs.1":                   0o644,
		"usr/local/share/man/man1/ovlctl.1":                  0o644,
		"usr/local/share/bash-completion/completions/ovlfs":  0o644,
		"usr/local/share/bash-completion/completions/ovlctl": 0o644,
		"usr/local/share/zsh/site-functions/_ovlfs":          0o644,
	}
	for rel, mode := range want {
		fi, err := os.Stat(filepath.Join(dest, rel))
		if err != nil {
			t.Errorf("make install: %v", err)
		} else if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode().Perm(), mode)
		}
	}
	helper, _ := os.ReadFile(filepath.Join(dest, "sbin/mount.fuse.ovlfs"))
	if !strings.Contains(string(helper), `PATH="/usr/local/bin:$PATH"`) {
		t.Errorf("mount.fuse.ovlfs does not look in PREFIX/bin first:\n%s", helper)
	}
	for _, page := range []string{"ovlfs.1", "ovlctl.1"} {
		cmd := exec.Command("man", "--warnings", "-l", filepath.Join(dest, "usr/local/share/man/man1", page))
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 || !strings.Contains(string(out), "SYNOPSIS") {
			t.Errorf("man -l %s: %v\n%s%.200s", page, err, stderr.String(), out)
		}
	}
	comp := filepath.Join(dest, "usr/local/share/bash-completion/completions/ovlctl")
	out, err := exec.Command("bash", "-c", `source "$0"; COMP_WORDS=(ovlctl im); COMP_CWORD=1; _ovlctl; echo "${COMPREPLY[*]}";
		COMP_WORDS=(ovlfs -o lowerdir=/l,upp); COMP_CWORD=2; _ovlfs; echo "${COMPREPLY[*]}"`, comp).CombinedOutput()
	if err != nil || string(out) != "import images\nlowerdir=/l,upperdir=\n" {
		t.Errorf("bash completion: %v\n%q", err, out)
	}
	if out, err := exec.Command("zsh", "-n", filepath.Join(dest, "usr/local/share/zsh/site-functions/_ovlfs")).CombinedOutput(); err != nil {
		t.Errorf("zsh -n _ovlfs: %v\n%s", err, out)
	}
	makeIn(t, "uninstall", "DESTDIR="+dest, "PREFIX=/usr/local")
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			t.Errorf("left after make uninstall: %s", p)
		}
		return nil
	})
}

// TestInstalledMountHelper mounts through the installed mount.fuse.ovlfs
// (as mount(8) runs it: SOURCE MOUNTPOINT -o OPTIONS) and finds the daemon
// by its name.
func TestInstalledMountHelper(t *testing.T) {
	requireMount(t)
	if _, err := exec.LookPath("mount.fuse3"); err != nil {
		t.Skip("SKIP: mount.fuse3 (package fuse3) is missing")
	}
	prefix := t.TempDir()
	makeIn(t, "install", "PREFIX="+prefix, "SBINDIR="+prefix+"/sbin")
	t.Cleanup(func() { makeIn(t, "uninstall", "PREFIX="+prefix, "SBINDIR="+prefix+"/sbin") })
	l, u, w := wrLayers(t, func(l string) { writeFile(t, filepath.Join(l, "f"), []byte("lower\n"), 0o644) })
	mnt := newMountpoint(t)
	cmd := exec.Command(filepath.Join(prefix, "sbin/mount.fuse.ovlfs"), "anything", mnt, "-o", layerOptions([]string{l}, u, w))
	cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin") // ovlfs only in PREFIX/bin
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount.fuse.ovlfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { unmountFuse(t, mnt) })
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "lower\n" {
		t.Errorf("read through the helper's mount: %q %v", b, err)
	}
	pids := daemonPids(mnt)
	if len(pids) != 1 {
		t.Fatalf("daemons serving %s: %v", mnt, pids)
	}
	exe, _ := os.Readlink("/proc/" + strconv.Itoa(pids[0]) + "/exe")
	if exe != filepath.Join(prefix, "bin/ovlfs") {
		t.Errorf("the daemon runs %s, want the installed %s/bin/ovlfs", exe, prefix)
	}
	comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pids[0]) + "/comm")
	if strings.TrimSpace(string(comm)) != "ovlfs" {
		t.Errorf("the daemon is named %q in ps, want ovlfs", strings.TrimSpace(string(comm)))
	}
	out, _ := exec.Command("pgrep", "-x", "ovlfs").Output()
	if !strings.Contains(" "+strings.ReplaceAll(string(out), "\n", " "), " "+strconv.Itoa(pids[0])+" ") {
		t.Errorf("pgrep -x ovlfs: %q does not list the daemon %d", out, pids[0])
	}
}

// TestMakeTestAsUser: make test run by an ordinary user skips the mount
// tests with one line instead of failing in unshare. The user is faked
// with an `id` that answers 1000, and GO=true stands in for the compiler.
func TestMakeTestAsUser(t *testing.T) {
	fake := t.TempDir()
	writeFile(t, filepath.Join(fake, "id"), []byte("#!/bin/sh\necho 1000\n"), 0o755)
	writeFile(t, filepath.Join(fake, "unshare"), []byte("#!/bin/sh\necho unshare ran; exit 1\n"), 0o755)
	cmd := exec.Command("make", "-C", "..", "--no-print-directory", "test", "GO=true")
	cmd.Env = append(os.Environ(), "PATH="+fake+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make test as a user: %v\n%s", err, out)
	}
	var skips int
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "mount tests skipped") {
			skips++
			if !strings.Contains(l, "need root") {
				t.Errorf("the skip line does not say root is needed: %q", l)
			}
		}
	}
	if skips != 1 || strings.Contains(string(out), "unshare ran") {
		t.Errorf("want one skip line and no unshare:\n%s", out)
	}
}
