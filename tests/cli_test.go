package tests

// Tests of the ovlfs command line and of the daemon's life: the forms of
// docs/cli.md, the validation errors, and how the daemon starts and ends.

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCLIVersionHelp(t *testing.T) {
	for _, arg := range []string{"--version", "-V"} {
		r := cliRun(t, "", arg)
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, "ovlfs version ") || !strings.Contains(r.Stdout, "go-fuse") {
			t.Errorf("ovlfs %s: status %d, stdout %q, stderr %q; want 0 and \"ovlfs version ...\" with the go-fuse version", arg, r.Code, r.Stdout, r.Stderr)
		}
	}
	for _, arg := range []string{"--help", "-h"} {
		r := cliRun(t, "", arg)
		if r.Code != 0 || !strings.Contains(r.Stdout, "usage: ovlfs") {
			t.Errorf("ovlfs %s: status %d, stdout %q; want 0 and the usage", arg, r.Code, r.Stdout)
		}
	}
}

func TestCLIValidationErrors(t *testing.T) {
	cliRequire(t)
	// Each case returns the arguments (and cwd) of a run that must fail before
	// anything is mounted, and a piece of the expected message.
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, s cliSet) (args []string, want string)
	}{
		{"no lowerdir", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "upperdir=" + s.Upper + ",workdir=" + s.Work, s.Mnt}, "no lowerdir"
		}},
		{"lowerdir missing", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "lowerdir=" + s.Dir + "/nope", s.Mnt}, "does not exist"
		}},
		{"second lowerdir missing", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "lowerdir=" + s.Lower + ":" + s.Dir + "/nope", s.Mnt}, "does not exist"
		}},
		{"lowerdir is a file", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "lowerdir=" + s.Lower + "/hello", s.Mnt}, "not a directory"
		}},
		{"upperdir missing", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + s.Dir + "/nope,workdir=" + s.Work, s.Mnt}, "does not exist"
		}},
		{"upperdir is a file", func(t *testing.T, s cliSet) ([]string, string) {
			f := cliFile(t, s.Dir, "file")
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + f + ",workdir=" + s.Work, s.Mnt}, "not a directory"
		}},
		{"workdir missing", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + s.Upper + ",workdir=" + s.Dir + "/nope", s.Mnt}, "does not exist"
		}},
		{"upper equals lower", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + s.Lower + ",workdir=" + s.Work, s.Mnt}, "inside lowerdir"
		}},
		{"upper equals lower through a symlink", func(t *testing.T, s cliSet) ([]string, string) {
			link := filepath.Join(s.Dir, "link")
			if err := os.Symlink(s.Lower, link); err != nil {
				t.Fatal(err)
			}
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + link + ",workdir=" + s.Work, s.Mnt}, "inside lowerdir"
		}},
		{"upper inside lower", func(t *testing.T, s cliSet) ([]string, string) {
			up := cliDir(t, s.Lower, "up")
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + up + ",workdir=" + s.Work, s.Mnt}, "inside lowerdir"
		}},
		{"lower inside upper", func(t *testing.T, s cliSet) ([]string, string) {
			lo := cliDir(t, s.Upper, "lo")
			return []string{"-o", "lowerdir=" + s.Lower + ":" + lo + ",upperdir=" + s.Upper + ",workdir=" + s.Work, s.Mnt}, "inside upperdir"
		}},
		{"workdir without upperdir", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "lowerdir=" + s.Lower + ",workdir=" + s.Work, s.Mnt}, "workdir given without upperdir"
		}},
		{"upperdir without workdir", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + s.Upper, s.Mnt}, "upperdir given without workdir"
		}},
		{"workdir equals upperdir", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + s.Upper + ",workdir=" + s.Upper, s.Mnt}, "inside upperdir"
		}},
		{"workdir inside upperdir", func(t *testing.T, s cliSet) ([]string, string) {
			w := cliDir(t, s.Upper, "w")
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + s.Upper + ",workdir=" + w, s.Mnt}, "inside upperdir"
		}},
		{"upperdir inside workdir", func(t *testing.T, s cliSet) ([]string, string) {
			u := cliDir(t, s.Work, "u")
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + u + ",workdir=" + s.Work, s.Mnt}, "inside workdir"
		}},
		{"workdir on another filesystem", func(t *testing.T, s cliSet) ([]string, string) {
			other := cliDir(t, s.Dir, "tmpfs")
			if err := syscall.Mount("tmpfs", other, "tmpfs", 0, "size=1m"); err != nil {
				t.Skipf("SKIP: cannot mount a tmpfs for the other filesystem: %v", err)
			}
			t.Cleanup(func() { syscall.Unmount(other, syscall.MNT_DETACH) })
			return []string{"-o", "lowerdir=" + s.Lower + ",upperdir=" + s.Upper + ",workdir=" + other, s.Mnt}, "different filesystems"
		}},
		{"mount point missing", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts(), s.Dir + "/nope"}, "does not exist"
		}},
		{"mount point is a file", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts(), cliFile(t, s.Dir, "file")}, "not a directory"
		}},
		{"mount point inside upperdir", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts(), cliDir(t, s.Upper, "m")}, "which the mount writes to"
		}},
		{"mount point inside workdir", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts(), cliDir(t, s.Work, "m")}, "which the mount writes to"
		}},
		{"metacopy=on", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts() + ",metacopy=on", s.Mnt}, "metacopy=on: not supported"
		}},
		{"index=on", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts() + ",index=on", s.Mnt}, "index=on: not supported"
		}},
		{"nfs_export=on", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts() + ",nfs_export=on", s.Mnt}, "nfs_export=on: not supported"
		}},
		{"verity=require", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts() + ",verity=require", s.Mnt}, "verity=require: not supported"
		}},
		{"redirect_dir=on with userxattr", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts() + ",userxattr,redirect_dir=on", s.Mnt}, "not with userxattr"
		}},
		{"uuid=bogus", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts() + ",uuid=bogus", s.Mnt}, "want on, auto, null or off"
		}},
		{"no mount point", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts()}, "no mount point"
		}},
		{"xattr_permissions out of range", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts() + ",xattr_permissions=3", s.Mnt}, "xattr_permissions"
		}},
		{"bad uidmapping syntax", func(t *testing.T, s cliSet) ([]string, string) {
			return []string{"-o", s.Opts() + ",uidmapping=0:1000", s.Mnt}, "uidmapping"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := cliLayers(t)
			args, want := tc.setup(t, s)
			mnt := args[len(args)-1]
			r := cliMountAndClean(t, mnt, "", args...)
			cliOneErrorLine(t, r, want)
			for _, p := range []string{s.Mnt, mnt} {
				if cliMounted(p) {
					t.Errorf("%s is mounted after a failed start", p)
				}
			}
		})
	}
}

func cliDir(t *testing.T, parent, name string) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func cliFile(t *testing.T, parent, name string) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cliCheckServes checks that mnt is a live ovlfs mount that shows lower's hello.
func cliCheckServes(t *testing.T, mnt string) {
	t.Helper()
	fstype, _, ok := cliMountInfo(mnt)
	if !ok {
		t.Fatalf("%s is not mounted", mnt)
	}
	if fstype != "fuse.ovlfs" {
		t.Errorf("%s: file system type %q, want fuse.ovlfs", mnt, fstype)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "hello")); err != nil || string(b) != "hello\n" {
		t.Errorf("read %s/hello: %q, %v", mnt, b, err)
	}
}

func TestCLIDaemonReturnsMounted(t *testing.T) {
	cliRequire(t)
	s := cliLayers(t)
	r := cliMountAndClean(t, s.Mnt, "", "-o", s.Opts(), s.Mnt)
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("mount: status %d, stderr %q", r.Code, r.Stderr)
	}
	// Right after the command returns, the mount point is another device.
	var st, pst syscall.Stat_t
	if err := syscall.Stat(s.Mnt, &st); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Dir(s.Mnt), &pst); err != nil {
		t.Fatal(err)
	}
	if st.Dev == pst.Dev {
		t.Errorf("%s has the device of its parent right after ovlfs returned: not mounted yet", s.Mnt)
	}
	cliCheckServes(t, s.Mnt)
	if got, err := os.Readlink("/proc/" + strconv.Itoa(cliDaemon(t, s.Mnt)) + "/cwd"); err != nil || got != "/" {
		t.Errorf("daemon cwd %q (%v), want /", got, err)
	}
}

func TestCLIUnknownOptionWarns(t *testing.T) {
	cliRequire(t)
	s := cliLayers(t)
	r := cliMountAndClean(t, s.Mnt, "", "-o", s.Opts()+",no_such_option,foo=bar", s.Mnt)
	if r.Code != 0 {
		t.Fatalf("status %d, stderr %q; an unknown option must not fail the mount", r.Code, r.Stderr)
	}
	for _, o := range []string{"no_such_option", "foo=bar"} {
		if !strings.Contains(r.Stderr, "ovlfs: unknown option ignored: "+o+"\n") {
			t.Errorf("stderr %q: no warning for %s", r.Stderr, o)
		}
	}
	cliCheckServes(t, s.Mnt)
}

func TestCLICompatOptionsSilent(t *testing.T) {
	cliRequire(t)
	s := cliLayers(t)
	r := cliMountAndClean(t, s.Mnt, "", "-o", s.Opts()+",threaded=1,writeback=1,fast_ino=1,noacl,redirect_dir=off,xino=auto,fsync=0,volatile,static_nlink,timeout=1,rw,dev,suid,exec,atime,user,nofail,_netdev,auto,noauto,xattr_permissions=0", s.Mnt)
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("status %d, stderr %q; want 0 and silence", r.Code, r.Stderr)
	}
	cliCheckServes(t, s.Mnt)
}

func TestCLIMountFuse3Form(t *testing.T) {
	cliRequire(t)
	s := cliLayers(t)
	// mount.fuse3 runs: PROGRAM SOURCE MOUNTPOINT -o OPTS; options may repeat.
	r := cliMountAndClean(t, s.Mnt, "", "mysource", s.Mnt, "-o", "rw,lowerdir="+s.Lower, "-o", "upperdir="+s.Upper+",,", "-o", "workdir="+s.Work+",nodev,nosuid")
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("status %d, stderr %q", r.Code, r.Stderr)
	}
	cliCheckServes(t, s.Mnt)
	if _, src, _ := cliMountInfo(s.Mnt); src != "mysource" {
		t.Errorf("source %q in mountinfo, want mysource", src)
	}
	// upperdir and workdir came in later -o: the mount is writable and a
	// write lands in upperdir (needs the fs package's write side).
	t.Run("upperdir from a later -o", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(s.Mnt, "new"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(s.Upper, "new")); err != nil {
			t.Errorf("written file not in upperdir: %v", err)
		}
	})
}

func TestCLIRelativePaths(t *testing.T) {
	cliRequire(t)
	s := cliLayers(t)
	// containers/storage runs the program from the store's overlay/ dir.
	r := cliMountAndClean(t, s.Mnt, s.Dir, "-o", "lowerdir=lower,upperdir=./upper,workdir=work", "mnt")
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("status %d, stderr %q", r.Code, r.Stderr)
	}
	cliCheckServes(t, s.Mnt)
}

func TestCLIEscapedColon(t *testing.T) {
	cliRequire(t)
	s := cliLayers(t)
	odd := cliDir(t, s.Dir, "a:b")
	if err := os.WriteFile(filepath.Join(odd, "colon"), []byte("c"), 0o644); err != nil {
		t.Fatal(err)
	}
	esc := strings.ReplaceAll(odd, ":", `\:`)
	r := cliMountAndClean(t, s.Mnt, "", "-o", "lowerdir="+esc+":"+s.Lower, s.Mnt)
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("status %d, stderr %q", r.Code, r.Stderr)
	}
	cliCheckServes(t, s.Mnt)
	if _, err := os.Stat(filepath.Join(s.Mnt, "colon")); err != nil {
		t.Errorf("file of the lower with a colon in its name: %v", err)
	}
}

// TestCLIStderrReleased: the caller reads our stderr to EOF (containers/storage
// does); the background daemon must not hold it.
func TestCLIStderrReleased(t *testing.T) {
	cliRequire(t)
	s := cliLayers(t)
	t.Cleanup(func() { cliUnmount(t, s.Mnt) })
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(cliBinary(t), "-o", s.Opts(), s.Mnt)
	cmd.Stderr = w
	// An extra inherited descriptor (as a shell's 2>&1 copies leave) too.
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ovlfs: %v", err)
	}
	eof := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(r)
		eof <- err
	}()
	select {
	case err := <-eof:
		if err != nil {
			t.Errorf("reading the stderr pipe: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stderr pipe still open 10s after ovlfs returned: the daemon holds the caller's stderr")
	}
	cliCheckServes(t, s.Mnt)
}

// cliEnders are the ways a mount ends: a signal to the daemon or an unmount
// by somebody else; each must make the daemon exit by itself.
var cliEnders = []struct {
	name string
	end  func(mnt string, pid int) error
}{
	{"SIGTERM", func(mnt string, pid int) error { return syscall.Kill(pid, syscall.SIGTERM) }},
	{"SIGINT", func(mnt string, pid int) error { return syscall.Kill(pid, syscall.SIGINT) }},
	{"fusermount3 -u", func(mnt string, pid int) error { return cliCmd("fusermount3", "-u", mnt) }},
	{"umount", func(mnt string, pid int) error { return cliCmd("umount", mnt) }},
	{"umount -l", func(mnt string, pid int) error { return cliCmd("umount", "-l", mnt) }},
}

func cliCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return errors.New(name + " " + strings.Join(args, " ") + ": " + err.Error() + ": " + string(out))
	}
	return nil
}

func TestCLIDaemonEnds(t *testing.T) {
	cliRequire(t)
	for _, e := range cliEnders {
		t.Run("background/"+e.name, func(t *testing.T) {
			s := cliLayers(t)
			r := cliMountAndClean(t, s.Mnt, "", "-o", s.Opts(), s.Mnt)
			if r.Code != 0 {
				t.Fatalf("mount: status %d, stderr %q", r.Code, r.Stderr)
			}
			pid := cliDaemon(t, s.Mnt)
			if err := e.end(s.Mnt, pid); err != nil {
				t.Fatal(err)
			}
			if !cliWaitFor(func() bool { return !cliAlive(pid) }) {
				t.Errorf("daemon %d still runs 10s after %s", pid, e.name)
			}
			if !cliWaitFor(func() bool { return !cliMounted(s.Mnt) }) {
				t.Errorf("%s still mounted after %s", s.Mnt, e.name)
			}
		})
		// In the foreground the test is the parent and sees the exit status.
		t.Run("foreground/"+e.name, func(t *testing.T) {
			s := cliLayers(t)
			t.Cleanup(func() { cliUnmount(t, s.Mnt) })
			var stderr bytes.Buffer
			cmd := exec.Command(cliBinary(t), "-f", "-o", s.Opts(), s.Mnt)
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			if !cliWaitFor(func() bool { return cliMounted(s.Mnt) }) {
				cmd.Process.Kill()
				t.Fatalf("ovlfs -f did not mount within 10s (stderr %q)", stderr.String())
			}
			if err := e.end(s.Mnt, cmd.Process.Pid); err != nil {
				cmd.Process.Kill()
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("ovlfs -f after %s: %v (stderr %q), want exit status 0", e.name, err, stderr.String())
				}
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("ovlfs -f still runs 10s after %s", e.name)
			}
			if cliMounted(s.Mnt) {
				t.Errorf("%s still mounted after %s", s.Mnt, e.name)
			}
		})
	}
}

func TestCLIDeadDaemon(t *testing.T) {
	cliRequire(t)
	s := cliLayers(t)
	r := cliMountAndClean(t, s.Mnt, "", "-o", s.Opts(), s.Mnt)
	if r.Code != 0 {
		t.Fatalf("mount: status %d, stderr %q", r.Code, r.Stderr)
	}
	pid := cliDaemon(t, s.Mnt)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !cliWaitFor(func() bool { return !cliAlive(pid) }) {
		t.Fatalf("daemon %d survived SIGKILL", pid)
	}
	// (stat may answer from the attribute cache for a while; readdir asks.
	// ECONNABORTED comes while the kernel tears the connection down.)
	var err error
	if !cliWaitFor(func() bool {
		_, err = os.ReadDir(s.Mnt)
		return errors.Is(err, syscall.ENOTCONN)
	}) {
		t.Fatalf("readdir of a dead daemon's mount point: %v, want ENOTCONN", err)
	}
	r = cliRun(t, "", "-o", s.Opts(), s.Mnt)
	cliOneErrorLine(t, r, "transport endpoint is not connected (a dead ovlfs daemon?): run 'fusermount3 -u "+s.Mnt+"' or 'umount -l "+s.Mnt+"'")
}

// TestCLIMountErrorReported: an error of the mount itself, met by the
// background daemon, reaches the caller as one line and status 1.
func TestCLIMountErrorReported(t *testing.T) {
	cliRequire(t)
	if _, err := os.Stat("/sys/fs/selinux/enforce"); err == nil {
		t.Skip("SKIP: SELinux is on: context= is a valid mount option here")
	}
	s := cliLayers(t)
	// Without SELinux the kernel refuses context=.
	r := cliMountAndClean(t, s.Mnt, "", "-o", s.Opts()+",context=system_u:object_r:tmp_t:s0", s.Mnt)
	cliOneErrorLine(t, r, "ovlfs: mount "+s.Mnt+": ")
	if cliMounted(s.Mnt) {
		t.Errorf("%s is mounted after a failed mount", s.Mnt)
	}
	if pids := cliDaemonPids(s.Mnt); len(pids) != 0 {
		t.Errorf("ovlfs processes %v left after a failed mount", pids)
	}
}
