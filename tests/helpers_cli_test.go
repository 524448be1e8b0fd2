package tests

// Helpers of the command-line tests (cli_test.go). Every top-level name starts
// with "cli" so that it never clashes with the equivalence-test harness.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cliBinary returns the ovlfs binary under test (see runMain).
func cliBinary(t testing.TB) string {
	t.Helper()
	if ovlfsBuildErr != nil {
		t.Fatal(ovlfsBuildErr)
	}
	return ovlfsBin
}

// cliRequire skips, with the reason, when real FUSE mounts are impossible.
func cliRequire(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: the CLI tests mount for real and need root (run: unshare -m --propagation private go test ./tests)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("SKIP: /dev/fuse is missing: %v", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("SKIP: fusermount3 is not installed (apt-get install fuse3)")
	}
}

// cliSet is a small layer set: lower holds the file "hello", upper and work are
// empty, mnt is an empty mount point; all under one temp dir.
type cliSet struct {
	Dir, Lower, Upper, Work, Mnt string
}

func cliLayers(t testing.TB) cliSet {
	t.Helper()
	d := t.TempDir()
	s := cliSet{
		Dir:   d,
		Lower: filepath.Join(d, "lower"),
		Upper: filepath.Join(d, "upper"),
		Work:  filepath.Join(d, "work"),
		Mnt:   filepath.Join(d, "mnt"),
	}
	for _, p := range []string{s.Lower, s.Upper, s.Work, s.Mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.Lower, "hello"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// Opts is the Podman-style -o string of s.
func (s cliSet) Opts() string {
	return "lowerdir=" + s.Lower + ",upperdir=" + s.Upper + ",workdir=" + s.Work
}

// cliResult is what one run of the binary printed and returned.
type cliResult struct {
	Stdout, Stderr string
	Code           int
}

// cliRun runs the binary with args (from dir when not "") and waits for it.
// The stdio copy is bounded: a daemon that kept our stderr would fail the run
// instead of hanging the test.
func cliRun(t testing.TB, dir string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBinary(t), args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	r := cliResult{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("ovlfs %q: %v (stderr %q)", args, err, r.Stderr)
	}
	return r
}

// cliMountAndClean runs a mount command and registers the unmount of mnt.
func cliMountAndClean(t testing.TB, mnt, dir string, args ...string) cliResult {
	t.Helper()
	t.Cleanup(func() { cliUnmount(t, mnt) })
	return cliRun(t, dir, args...)
}

// cliMountInfo returns the file system type and source of the topmost mount
// on mnt in /proc/self/mountinfo; ok is false when mnt is not a mount point.
func cliMountInfo(mnt string) (fstype, source string, ok bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || cliUnoctal(fields[4]) != mnt {
			continue
		}
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) {
				fstype, source, ok = fields[i+1], cliUnoctal(fields[i+2]), true
			}
		}
	}
	return fstype, source, ok
}

// cliMounted reports whether mnt is a mount point in this namespace.
func cliMounted(mnt string) bool {
	_, _, ok := cliMountInfo(mnt)
	return ok
}

// cliUnoctal undoes the \NNN escapes of /proc/self/mountinfo.
func cliUnoctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cliUnmount undoes every mount on mnt: fusermount3 -u, then a lazy detach.
func cliUnmount(t testing.TB, mnt string) {
	t.Helper()
	for i := 0; i < 10 && cliMounted(mnt); i++ {
		if exec.Command("fusermount3", "-u", mnt).Run() == nil {
			continue
		}
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Logf("cleanup: umount -l %s: %v", mnt, err)
			return
		}
	}
}

// cliDaemonPids returns the ovlfs processes whose command line names mnt.
func cliDaemonPids(mnt string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) != "ovlfs" || !cliAlive(pid) {
			continue
		}
		for _, a := range args[1:] {
			if a == mnt {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// cliDaemon returns the one daemon serving mnt.
func cliDaemon(t testing.TB, mnt string) int {
	t.Helper()
	pids := cliDaemonPids(mnt)
	if len(pids) != 1 {
		t.Fatalf("want one ovlfs process for %s, found %v", mnt, pids)
	}
	return pids[0]
}

// cliAlive reports whether pid runs (a zombie counts as gone).
func cliAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// cliWaitFor polls cond for up to 10 s (generous: only a hang fails).
func cliWaitFor(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cliOneErrorLine checks a failed run: status 1 and exactly one stderr line
// "ovlfs: ..." that contains want.
func cliOneErrorLine(t testing.TB, r cliResult, want string) {
	t.Helper()
	if r.Code != 1 {
		t.Errorf("exit status %d, want 1 (stderr %q)", r.Code, r.Stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.Stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "ovlfs: ") || !strings.HasSuffix(r.Stderr, "\n") {
		t.Errorf("stderr %q, want exactly one line starting with \"ovlfs: \"", r.Stderr)
	}
	if !strings.Contains(r.Stderr, want) {
		t.Errorf("stderr %q does not mention %q", r.Stderr, want)
	}
}
