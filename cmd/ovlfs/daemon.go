package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/fs"
	"github.com/ovlfs/ovlfs/whiteout"
)

// daemonEnv marks the re-executed background process; its value is the fd of
// the pipe on which the daemon reports "ok" or the mount error to its parent.
const daemonEnv = "OVLFS_DAEMON_FD"

// resolvedEnv hands the daemon the paths its parent resolved and checked
// (resolve), so that a mount of many layers does not resolve them twice: the
// mount point, upper, work, then the lowers, each quoted as by strconv.Quote.
const resolvedEnv = "OVLFS_RESOLVED"

func (o *options) resolvedEnv() string {
	var b strings.Builder
	for _, p := range append([]string{o.Mountpoint, o.Upper, o.Work}, o.Lowers...) {
		b.WriteString(strconv.Quote(p))
	}
	return b.String()
}

// takeResolved sets the paths of o from resolvedEnv; false when it is absent
// or does not match the command line, and then o must be resolved.
func (o *options) takeResolved() bool {
	v, ok := os.LookupEnv(resolvedEnv)
	os.Unsetenv(resolvedEnv)
	if !ok {
		return false
	}
	var ps []string
	for v != "" {
		q, err := strconv.QuotedPrefix(v)
		if err != nil {
			return false
		}
		p, err := strconv.Unquote(q)
		if err != nil {
			return false
		}
		ps = append(ps, p)
		v = v[len(q):]
	}
	if len(ps) != 3+len(o.Lowers) || (ps[1] != "") != o.UpperSet || (ps[2] != "") != o.WorkSet {
		return false
	}
	o.Mountpoint, o.Upper, o.Work = ps[0], ps[1], ps[2]
	copy(o.Lowers, ps[3:])
	return true
}

// daemonFD returns the report fd when this process is the background daemon.
func daemonFD() (int, bool) {
	v, ok := os.LookupEnv(daemonEnv)
	if !ok {
		return 0, false
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return 0, false
	}
	return fd, true
}

// spawnDaemon re-executes this program in the background (Go cannot fork) and
// returns once the child reports that the mount is live, or why it is not. The
// child gets /dev/null as stdio: it must not hold the caller's stderr open.
func spawnDaemon(o *options) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), daemonEnv+"=3")
	if v := o.resolvedEnv(); len(v) < 64<<10 {
		cmd.Env = append(cmd.Env, resolvedEnv+"="+v)
	}
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Descriptors inherited from our caller (a dup of its stderr pipe, say)
	// must not live on in the daemon. The parent exits soon; ExtraFiles are
	// dup'ed for the child regardless.
	unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	msg, _ := io.ReadAll(r)
	line := strings.TrimSpace(string(msg))
	switch {
	case line == "ok":
		// The daemon serves on; nobody waits for it (it is reparented).
		cmd.Process.Release()
		return nil
	case line != "":
		cmd.Wait()
		return fmt.Errorf("mount %s: %s", o.Mountpoint, line)
	}
	werr := cmd.Wait()
	if werr == nil {
		werr = errors.New("exit status 0")
	}
	return fmt.Errorf("mount %s: the daemon died before the mount was live (%v)", o.Mountpoint, werr)
}

// serve mounts o and serves until the file system is unmounted, by a signal
// (SIGTERM, SIGINT) or by someone else. report, when not nil, gets the outcome
// of the mount (nil: live) and must release the parent.
func serve(o *options, report func(error)) error {
	// Paths are absolute by now; do not keep the caller's cwd busy.
	if err := os.Chdir("/"); err != nil {
		return err
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP)

	cfg, mo := o.fsConfig()
	// fusermount3 (a mount without root) says on stderr why it refuses a
	// mount; go-fuse only gives its exit code. Keep what it says for the
	// error line.
	done := captureStderr()
	srv, err := fs.Mount(o.Mountpoint, cfg, mo)
	if said := done(err != nil); err != nil && said != "" {
		err = errors.New(said)
	}
	if report != nil {
		report(err)
	}
	if err != nil {
		return fmt.Errorf("mount %s: %v", o.Mountpoint, err)
	}
	go func() {
		<-sig
		unmount(srv, o.Mountpoint)
		// A second signal ends the wait for busy files after a lazy detach.
		<-sig
		os.Exit(0)
	}()
	srv.Wait()
	return nil
}

// unmount unmounts srv, falling back to a lazy detach while the mount is busy:
// the kernel then ends the connection, and srv.Wait returns, once the last
// open file is closed.
func unmount(srv *fuse.Server, mnt string) {
	if err := srv.Unmount(); err == nil {
		return
	}
	unix.Unmount(mnt, unix.MNT_DETACH)
}

// fsConfig maps the parsed options to the fs package's settings.
func (o *options) fsConfig() (fs.Config, fs.MountOptions) {
	cfg := fs.Config{
		Lowers:      o.Lowers,
		Upper:       o.Upper,
		Work:        o.Work,
		StaticNlink: o.StaticNlink,
		NoXattrs:    o.NoXattrs,
		NoFsync:     o.NoFsync,
		NoACL:       o.NoACL,
		Redirect:    o.RedirectDir,
		Volatile:    o.Volatile,
		UUID:        o.UUID,

		XattrPermissions: o.XattrPermissions,
	}
	if o.UserXattr {
		cfg.NS = whiteout.User
	}
	for _, k := range o.Kernel {
		switch k {
		case "noatime":
			cfg.NoAtime = true
		case "nodiratime":
			cfg.NoDirAtime = true
		case "strictatime":
			// A read-only mount moves no atime at all.
			cfg.StrictAtime = !slices.Contains(o.Kernel, "ro")
		}
	}
	if o.TimeoutSet {
		t := o.Timeout
		cfg.Timeout = &t
	}
	for _, m := range o.UIDMap {
		cfg.UIDMap = append(cfg.UIDMap, fs.IDMap{Disk: m.Disk, View: m.View, Size: m.Size})
	}
	for _, m := range o.GIDMap {
		cfg.GIDMap = append(cfg.GIDMap, fs.IDMap{Disk: m.Disk, View: m.View, Size: m.Size})
	}
	// fuse-overlayfs: squash_to_uid/gid win over squash_to_root.
	var zero uint32
	if o.SquashToRoot {
		cfg.SquashUID, cfg.SquashGID = &zero, &zero
	}
	if o.SquashUID >= 0 {
		u := uint32(o.SquashUID)
		cfg.SquashUID = &u
	}
	if o.SquashGID >= 0 {
		g := uint32(o.SquashGID)
		cfg.SquashGID = &g
	}
	mo := fs.MountOptions{
		FsName:             o.Source,
		AllowOther:         o.AllowOther,
		DefaultPermissions: o.DefaultPermissions,
		Debug:              o.Debug,
		Options:            o.Kernel,
	}
	if mo.FsName == "" {
		mo.FsName = "ovlfs"
	}
	return cfg, mo
}

// captureStderr points os.Stderr (which go-fuse hands to fusermount3) at a
// pipe until done is called. done(failed) restores it and returns the last
// line written, when failed; otherwise it passes what was written on.
func captureStderr() (done func(failed bool) string) {
	r, w, err := os.Pipe()
	if err != nil {
		return func(bool) string { return "" }
	}
	orig := os.Stderr
	os.Stderr = w
	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		r.Close()
		out <- b
	}()
	return func(failed bool) string {
		os.Stderr = orig
		w.Close()
		b := <-out
		if !failed {
			orig.Write(b)
			return ""
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		return strings.TrimSpace(lines[len(lines)-1])
	}
}
