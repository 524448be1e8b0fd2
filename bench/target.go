package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ovlfs/ovlfs/layout"
)

// The targets: the same layers mounted three ways.
const (
	kernel = "kernel"
	ovlfs  = "ovlfs"
	fuseOv = "fuse-overlayfs"
)

// bench is one run of ovlbench.
type bench struct {
	ctx     context.Context
	data    string // prepared data, cached between runs
	runDir  string // this run's upper, work and mount dirs
	ovlfs   string
	out     string
	targets []string
	cpu     string // "" when unpinned
	rounds  int
	timeout time.Duration
	mirror  string
	self    string // this executable: workloads call its lstat helper
	lock    *os.File

	mu      sync.Mutex
	mounts  map[*mount]bool // live mounts, for the cleanup
	nextID  int
	results []result
	views   []string // view-check problems
	info    runInfo
}

// mount is one live overlay: a target's view of some layers.
type mount struct {
	target string
	dir    string // holds upper/, work/, mnt/ (removed at unmount when owned)
	mnt    string
	pid    int           // the FUSE daemon; 0 for the kernel
	took   time.Duration // the mount command's wall time
	owned  bool          // dir belongs to this mount
}

// mountData mounts a fresh, empty upper over ds for target t.
func (b *bench) mountData(t string, ds *dataset) (*mount, error) {
	b.mu.Lock()
	b.nextID++
	dir := filepath.Join(b.runDir, fmt.Sprintf("%s-%d", t, b.nextID))
	b.mu.Unlock()
	for _, d := range []string{"upper", "work", "mnt"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	m, err := b.mountAt(t, ds.layers, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "mnt"), "")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	m.dir, m.owned = dir, true
	return m, nil
}

// mountAt mounts lowers (relative to the data dir, topmost first; short
// names keep 203 layers inside the kernel's 4 KiB option limit) with upper
// and work (none: read-only) on mnt. The mount command runs pinned, like
// the workloads, and its wall time is the mount time.
func (b *bench) mountAt(t string, lowers []string, upper, work, mnt, extra string) (*mount, error) {
	opts := "lowerdir=" + strings.Join(lowers, ":")
	if upper != "" {
		opts += ",upperdir=" + upper + ",workdir=" + work
	}
	if extra != "" {
		opts += "," + extra
	}
	var argv []string
	switch t {
	case kernel:
		argv = []string{"mount", "-t", "overlay", "overlay", "-o", opts, mnt}
	case ovlfs:
		argv = []string{b.ovlfs, "-o", opts, mnt}
	case fuseOv:
		argv = []string{"fuse-overlayfs", "-o", opts, mnt}
	default:
		return nil, fmt.Errorf("unknown target %q", t)
	}
	start := time.Now()
	_, err := b.command(b.data, nil, b.pin(argv), 60*time.Second)
	took := time.Since(start)
	if err != nil {
		if isMounted(mnt) {
			b.unmount(&mount{target: t, mnt: mnt})
		}
		return nil, fmt.Errorf("mount: %w", err)
	}
	if !isMounted(mnt) {
		return nil, fmt.Errorf("mount: returned 0 but %s is not mounted", mnt)
	}
	m := &mount{target: t, mnt: mnt, took: took}
	if t != kernel {
		m.pid = daemonPid(mnt)
	}
	b.mu.Lock()
	b.mounts[m] = true
	b.mu.Unlock()
	return m, nil
}

// unmount undoes m and everything mounted below it, waits for its daemon,
// and removes its directories. It never removes anything still mounted.
func (b *bench) unmount(m *mount) {
	if m == nil {
		return
	}
	if isMounted(m.mnt) {
		if err := unmountPath(m.mnt); err != nil {
			logf("%v", err)
		}
	}
	if m.pid > 0 {
		deadline := time.Now().Add(10 * time.Second)
		for alive(m.pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(m.pid) {
			logf("%s daemon %d still runs 10s after the unmount of %s: killing it", m.target, m.pid, m.mnt)
			syscall.Kill(m.pid, syscall.SIGKILL)
		}
	}
	b.mu.Lock()
	delete(b.mounts, m)
	b.mu.Unlock()
	if m.owned && !isMounted(m.mnt) {
		if err := os.RemoveAll(m.dir); err != nil {
			logf("remove %s: %v", m.dir, err)
		}
	}
}

// cleanup unmounts whatever is still mounted (failure, Ctrl-C).
func (b *bench) cleanup() {
	b.mu.Lock()
	var ms []*mount
	for m := range b.mounts {
		ms = append(ms, m)
	}
	b.mu.Unlock()
	for _, m := range ms {
		b.unmount(m)
	}
	if b.runDir != "" && !mountedBelow(b.runDir) {
		os.RemoveAll(b.runDir)
	}
}

// pin prefixes argv with taskset unless the run is unpinned. A FUSE daemon
// started this way stays on that CPU too.
func (b *bench) pin(argv []string) []string {
	if b.cpu == "" {
		return argv
	}
	return append([]string{"taskset", "-c", b.cpu}, argv...)
}

// command runs argv in dir and returns its stdout. Output goes through
// files, not pipes, so a daemon that keeps them open cannot hang us. It runs
// in its own process group, killed whole on timeout or Ctrl-C. A failure
// carries the last line of stderr.
func (b *bench) command(dir string, env []string, argv []string, limit time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(b.ctx, limit)
	defer cancel()
	stdout, err := os.CreateTemp("", "ovlbench-out")
	if err != nil {
		return nil, err
	}
	defer os.Remove(stdout.Name())
	defer stdout.Close()
	stderr, err := os.CreateTemp("", "ovlbench-err")
	if err != nil {
		return nil, err
	}
	defer os.Remove(stderr.Name())
	defer stderr.Close()

	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"LC_ALL=C"}, env...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	out, _ := os.ReadFile(stdout.Name())
	if err == nil {
		return out, nil
	}
	switch {
	case b.ctx.Err() != nil:
		return out, errors.New("interrupted")
	case ctx.Err() != nil:
		return out, fmt.Errorf("timeout after %v", limit)
	}
	msg, _ := os.ReadFile(stderr.Name())
	if line := lastLine(string(msg)); line != "" {
		return out, errors.New(line)
	}
	return out, err
}

// daemonPid finds the process serving mnt: the one whose command line has
// mnt (a unique path) as an argument.
func daemonPid(mnt string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(cmdline), "\x00") {
			if a == mnt {
				return pid
			}
		}
	}
	return 0
}

// procStatusKiB reads a "VmHWM:"-like field of /proc/PID/status in KiB.
func procStatusKiB(pid int, field string) int64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return -1
}

func alive(pid int) bool {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(s), ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// isMounted tells whether p is a mount point in our namespace.
func isMounted(p string) bool { return layout.IsMountPoint(p) }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found: %w", name, err)
	}
	return p, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ovlbench: "+format+"\n", args...)
}

// unmountPath unmounts p and everything below it, detaching if it is busy.
func unmountPath(p string) error {
	if err := exec.Command("umount", "-R", p).Run(); err == nil {
		return nil
	}
	if out, err := exec.Command("umount", "-R", "-l", p).CombinedOutput(); err != nil {
		return fmt.Errorf("umount -l %s: %v: %s", p, err, strings.TrimSpace(string(out)))
	}
	return nil
}
