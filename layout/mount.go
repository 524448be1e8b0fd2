package layout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/whiteout"
)

// Drivers of Get.
const (
	DriverAuto   = "auto"
	DriverKernel = "kernel"
	DriverFuse   = "fuse"
)

// MountOptions says how Get mounts a layer.
type MountOptions struct {
	Driver string // auto (default), kernel or fuse
	RO     bool   // the layer's diff/ becomes the top lower; no upper
	Path   string // mount point; ROOT/<id>/merged when empty
}

// mountRecord is what the store remembers of a mount, for Put.
type mountRecord struct {
	Path   string `json:"path"`
	Driver string `json:"driver"`
	RO     bool   `json:"ro,omitempty"`
}

func (s *Store) mountRecord(id string) (mountRecord, bool) {
	var m mountRecord
	b, err := s.readFile(mountsDir + "/" + id + ".json")
	if err != nil || json.Unmarshal(b, &m) != nil {
		return m, false
	}
	return m, true
}

// stack is the layer set of one mount, as absolute paths.
type stack struct {
	lowers      []string // topmost first
	rel         []string // the same, relative to the store root
	upper, work string
	relUpper    string
	relWork     string
}

// stackOf builds the layer set of mounting l.
// Preconditions: the store lock is held.
func (s *Store) stackOf(l *Layer, ro bool) (*stack, error) {
	st := &stack{}
	for _, lid := range l.Lower {
		if _, err := lstatAt(s.fd, linkDir+"/"+lid); err != nil {
			return nil, fmt.Errorf("layer %s: lower l/%s is missing (ovlctl check --repair)", l.ID, lid)
		}
		st.lowers = append(st.lowers, s.path(linkDir, lid))
		st.rel = append(st.rel, linkDir+"/"+lid)
	}
	diff := l.ID + "/" + diffDirName
	if ro {
		st.lowers = append([]string{s.path(diff)}, st.lowers...)
		st.rel = append([]string{diff}, st.rel...)
	} else {
		if err := unix.Mkdirat(s.fd, l.ID+"/"+workDirName, 0o700); err != nil && err != unix.EEXIST {
			return nil, &os.PathError{Op: "mkdir", Path: s.path(l.ID, workDirName), Err: err}
		}
		st.upper, st.relUpper = s.path(diff), diff
		st.work, st.relWork = s.path(l.ID, workDirName), l.ID+"/"+workDirName
	}
	if len(st.lowers) == 0 || (ro && len(st.lowers) == 1) {
		// A base layer: overlay wants a lower (two without upper); an empty one
		// changes nothing.
		if err := unix.Mkdirat(s.fd, l.ID+"/"+emptyDirName, 0o755); err != nil && err != unix.EEXIST {
			return nil, err
		}
		st.lowers = append(st.lowers, s.path(l.ID, emptyDirName))
		st.rel = append(st.rel, l.ID+"/"+emptyDirName)
	}
	return st, nil
}

// escape escapes ':' ',' and '\' in a layer path, as in lowerdir=.
func escape(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r == ':' || r == ',' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// options builds the overlay option string, with relative paths if rel.
func (st *stack) options(rel bool, extra ...string) string {
	lowers, upper, work := st.lowers, st.upper, st.work
	if rel {
		lowers, upper, work = st.rel, st.relUpper, st.relWork
	}
	esc := make([]string, len(lowers))
	for i, l := range lowers {
		esc[i] = escape(l)
	}
	o := "lowerdir=" + strings.Join(esc, ":")
	if upper != "" {
		o += ",upperdir=" + escape(upper) + ",workdir=" + escape(work)
	}
	for _, e := range extra {
		o += "," + e
	}
	return o
}

// Get mounts layer id (its lowers, with its diff/ as upper unless RO) and
// returns the mount point. Driver auto uses the kernel overlay when it can
// mount here and ovlfs otherwise.
func (s *Store) Get(id string, o MountOptions) (string, error) {
	unlock, err := s.Lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	l, err := s.Layer(id)
	if err != nil {
		return "", err
	}
	if l.Mounted {
		return "", fmt.Errorf("layer %s is already mounted at %s", id, l.MountPoint)
	}
	if l.Committed && !o.RO {
		return "", fmt.Errorf("layer %s has children (committed): mount it --ro, or create a layer on top", id)
	}
	if l.Link == "" {
		return "", fmt.Errorf("layer %s has no link file (ovlctl check --repair)", id)
	}
	mnt := o.Path
	if mnt == "" {
		mnt = s.path(id, mergedDirName)
		if err := unix.Mkdirat(s.fd, id+"/"+mergedDirName, 0o700); err != nil && err != unix.EEXIST {
			return "", &os.PathError{Op: "mkdir", Path: mnt, Err: err}
		}
	} else if mnt, err = filepath.Abs(mnt); err != nil {
		return "", err
	}
	if fi, err := os.Stat(mnt); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("mount point %s is not a directory", mnt)
	}
	st, err := s.stackOf(l, o.RO)
	if err != nil {
		return "", err
	}
	driver := o.Driver
	switch driver {
	case "", DriverAuto:
		kerr := s.mountKernel(st, mnt, o.RO)
		driver = DriverKernel
		if kerr != nil {
			driver = DriverFuse
			if ferr := s.mountFuse(st, mnt); ferr != nil {
				return "", fmt.Errorf("kernel overlay: %v; ovlfs: %v", kerr, ferr)
			}
		}
	case DriverKernel:
		err = s.mountKernel(st, mnt, o.RO)
	case DriverFuse:
		err = s.mountFuse(st, mnt)
	default:
		return "", fmt.Errorf("unknown driver %q (auto, kernel or fuse)", driver)
	}
	if err != nil {
		return "", err
	}
	rec, _ := json.Marshal(mountRecord{Path: mnt, Driver: driver, RO: o.RO})
	if err := writeFileAt(s.fd, mountsDir+"/"+id+".json", rec, 0o600); err != nil {
		unmount(mnt, driver)
		return "", err
	}
	return mnt, nil
}

// mountKernel mounts the kernel's overlay. An option string too long for
// mount(2) goes through the new mount API (one lowerdir+ per layer), or, on a
// kernel without it, relative l/ paths from the store root (as Docker does).
func (s *Store) mountKernel(st *stack, mnt string, ro bool) error {
	var extra []string
	if s.NS == whiteout.User {
		extra = append(extra, "userxattr")
	}
	var flags uintptr
	if ro {
		flags |= unix.MS_RDONLY
	}
	data := st.options(false, extra...)
	if len(data) <= maxOptions {
		if err := unix.Mount("overlay", mnt, "overlay", flags, data); err != nil {
			return fmt.Errorf("mount -t overlay on %s: %w (see dmesg)", mnt, err)
		}
		return nil
	}
	err := MountOverlay(mnt, st.lowers, st.upper, st.work, extra, ro)
	if err == nil {
		return nil
	}
	rdata := st.options(true, extra...)
	if len(rdata) > maxOptions {
		return fmt.Errorf("mount -t overlay with %d layers: %w", len(st.lowers), err)
	}
	return s.mountRelative(mnt, flags, rdata)
}

// mountRelative runs mount(2) with the store root as working directory.
// The working directory is the whole process's: ovlctl is single-purpose.
func (s *Store) mountRelative(mnt string, flags uintptr, data string) error {
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	if err := unix.Fchdir(s.fd); err != nil {
		return err
	}
	defer os.Chdir(cwd)
	if err := unix.Mount("overlay", mnt, "overlay", flags, data); err != nil {
		return fmt.Errorf("mount -t overlay (relative l/ paths) on %s: %w (see dmesg)", mnt, err)
	}
	return nil
}

// MountOverlay mounts the kernel overlay of lowers (topmost first), upper and
// work (both "" for a read-only overlay) at mnt through the new mount API,
// which takes every layer separately and so has no 4095-byte limit on the
// option string. opts are more options, "key=value" or a flag, several per
// item separated by commas; ro makes the mount read-only.
func MountOverlay(mnt string, lowers []string, upper, work string, opts []string, ro bool) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fd, k, v); err != nil {
			return fmt.Errorf("fsconfig %s=%s: %w", k, v, err)
		}
		return nil
	}
	for _, l := range lowers {
		if err := set("lowerdir+", l); err != nil {
			return err
		}
	}
	if upper != "" {
		if err := set("upperdir", upper); err != nil {
			return err
		}
		if err := set("workdir", work); err != nil {
			return err
		}
	}
	for _, o := range opts {
		for _, kv := range strings.Split(o, ",") {
			if kv == "" {
				continue
			}
			if k, v, ok := strings.Cut(kv, "="); ok {
				err = set(k, v)
			} else if err = unix.FsconfigSetFlag(fd, kv); err != nil {
				err = fmt.Errorf("fsconfig %s: %w", kv, err)
			}
			if err != nil {
				return err
			}
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("fsconfig create: %w", err)
	}
	var attr int
	if ro {
		attr = unix.MOUNT_ATTR_RDONLY
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, mnt, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// ovlfsPath finds the ovlfs program: Store.OvlfsBin, $OVLFS_BIN, next to our
// own executable, then $PATH.
func (s *Store) ovlfsPath() (string, error) {
	if s.OvlfsBin != "" {
		return s.OvlfsBin, nil
	}
	if b := os.Getenv("OVLFS_BIN"); b != "" {
		return b, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "ovlfs")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath("ovlfs")
	if err != nil {
		return "", errors.New("ovlfs not found next to ovlctl nor on $PATH (set OVLFS_BIN)")
	}
	return p, nil
}

// mountFuse runs ovlfs on the layer set; it returns once the mount is live.
// ovlfs takes the options as an argument, so there is no 4095-byte limit,
// but relative paths keep very deep stacks short.
func (s *Store) mountFuse(st *stack, mnt string) error {
	bin, err := s.ovlfsPath()
	if err != nil {
		return err
	}
	data, dir := st.options(false), ""
	if len(data) > 64<<10 {
		data, dir = st.options(true), s.Root
	}
	errFile, err := os.CreateTemp("", "ovlctl-ovlfs-")
	if err != nil {
		return err
	}
	defer os.Remove(errFile.Name())
	defer errFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-o", data, mnt)
	cmd.Dir = dir
	// A file, not a pipe: the daemon keeps nothing of ours open.
	cmd.Stderr = errFile
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(errFile.Name())
		return fmt.Errorf("%s: %v: %s", bin, err, strings.TrimSpace(string(bytes.TrimPrefix(msg, []byte("ovlfs: ")))))
	}
	if !IsMountPoint(mnt) {
		return fmt.Errorf("%s returned but %s is not mounted", bin, mnt)
	}
	return nil
}

// Put unmounts layer id.
func (s *Store) Put(id string) error {
	unlock, err := s.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	return s.putLocked(id)
}

// Preconditions: the store lock is held.
func (s *Store) putLocked(id string) error {
	if err := CheckID(id); err != nil {
		return err
	}
	m, ok := s.mountRecord(id)
	if !ok {
		if IsMountPoint(s.path(id, mergedDirName)) {
			m = mountRecord{Path: s.path(id, mergedDirName), Driver: DriverKernel}
		} else {
			return fmt.Errorf("layer %s is not mounted", id)
		}
	}
	if IsMountPoint(m.Path) {
		if err := unmount(m.Path, m.Driver); err != nil {
			return err
		}
	}
	unix.Unlinkat(s.fd, mountsDir+"/"+id+".json", 0)
	unix.Unlinkat(s.fd, id+"/"+mergedDirName, unix.AT_REMOVEDIR)
	unix.Unlinkat(s.fd, id+"/"+emptyDirName, unix.AT_REMOVEDIR)
	return nil
}

// unmount undoes one mount: umount(2), or fusermount3 -u for an
// unprivileged FUSE mount.
func unmount(mnt, driver string) error {
	err := unix.Unmount(mnt, 0)
	if err == nil {
		return nil
	}
	if driver == DriverFuse && err == unix.EPERM {
		out, ferr := exec.Command("fusermount3", "-u", mnt).CombinedOutput()
		if ferr == nil {
			return nil
		}
		return fmt.Errorf("fusermount3 -u %s: %v: %s", mnt, ferr, bytes.TrimSpace(out))
	}
	return &os.PathError{Op: "umount", Path: mnt, Err: err}
}
