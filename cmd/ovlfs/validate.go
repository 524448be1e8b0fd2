package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/whiteout"
)

// resolve makes every path of o absolute and free of symlinks (relative paths
// are taken from the current directory, as containers/storage expects), and
// checks that the layers and the mount point make a sane overlay. It runs
// before anything is mounted or forked.
func (o *options) resolve() error {
	if o.AllowOther && os.Geteuid() != 0 && !userAllowOther(fuseConf) {
		// fusermount3 would refuse it with a message of its own after the
		// daemon started; say it once, before anything happens.
		return fmt.Errorf("allow_other: an ordinary user may use it only where %s has a line user_allow_other", fuseConf)
	}
	if len(o.Lowers) == 0 {
		return errors.New("no lowerdir given (want -o lowerdir=DIR[:DIR...])")
	}
	if o.RedirectDir == "on" || o.RedirectDir == "follow" {
		if o.UserXattr {
			return fmt.Errorf("redirect_dir=%s: not with userxattr (the kernel refuses it too; use redirect_dir=off or nofollow)", o.RedirectDir)
		}
		if whiteout.DefaultNS() == whiteout.User {
			return fmt.Errorf("redirect_dir=%s: not without root, where the overlay metadata is in user.overlay.* xattrs (as with the kernel's userxattr); use redirect_dir=off or nofollow", o.RedirectDir)
		}
	}
	if o.UpperSet && !o.WorkSet {
		return errors.New("upperdir given without workdir")
	}
	if o.WorkSet && !o.UpperSet {
		return errors.New("workdir given without upperdir")
	}

	// The mount point first: a dead daemon's mount point makes every later
	// stat below it fail with a confusing message.
	if err := checkConnected(o.Mountpoint); err != nil {
		return err
	}
	var rs resolver
	mnt, err := rs.dir("mount point", o.Mountpoint)
	if err != nil {
		return err
	}
	o.Mountpoint = mnt

	for i, l := range o.Lowers {
		if o.Lowers[i], err = rs.dir("lowerdir", l); err != nil {
			return err
		}
	}
	var upperSt, workSt unix.Stat_t
	if o.UpperSet {
		if o.Upper, err = rs.dir("upperdir", o.Upper); err != nil {
			return err
		}
		if o.Work, err = rs.dir("workdir", o.Work); err != nil {
			return err
		}
		for _, l := range o.Lowers {
			if within(o.Upper, l) {
				return fmt.Errorf("upperdir %s is inside lowerdir %s", o.Upper, l)
			}
			if within(l, o.Upper) {
				return fmt.Errorf("lowerdir %s is inside upperdir %s", l, o.Upper)
			}
		}
		if within(o.Work, o.Upper) {
			return fmt.Errorf("workdir %s is inside upperdir %s", o.Work, o.Upper)
		}
		if within(o.Upper, o.Work) {
			return fmt.Errorf("upperdir %s is inside workdir %s", o.Upper, o.Work)
		}
		if err := unix.Stat(o.Upper, &upperSt); err != nil {
			return &os.PathError{Op: "stat", Path: o.Upper, Err: err}
		}
		if err := unix.Stat(o.Work, &workSt); err != nil {
			return &os.PathError{Op: "stat", Path: o.Work, Err: err}
		}
		if upperSt.Dev != workSt.Dev {
			return fmt.Errorf("workdir %s and upperdir %s are on different filesystems", o.Work, o.Upper)
		}
		// Every write would fail with EACCES or EROFS later: say it now.
		for _, d := range []struct{ what, path string }{{"upperdir", o.Upper}, {"workdir", o.Work}} {
			if err := unix.Access(d.path, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("%s %s: not writable by this user (%v); mount it read-only without upperdir/workdir, or use a directory you can write", d.what, d.path, err)
			}
		}
	}

	if o.Xino == "off" {
		devs := map[uint64]bool{}
		for _, l := range append(append([]string(nil), o.Lowers...), o.Upper) {
			var st unix.Stat_t
			if l != "" && unix.Stat(l, &st) == nil {
				devs[st.Dev] = true
			}
		}
		if len(devs) > 1 {
			return errors.New("xino=off: the layers are on more than one filesystem, where the kernel would show each file's own st_dev; ovlfs has one st_dev and always composes unique inode numbers (as xino=on): drop xino=off")
		}
	}

	// A mount point on a lower layer (the layer itself: an overlay "in
	// place") is fine: the daemon opens every layer before the mount covers
	// it, as the kernel overlay holds its layers. On the upper or work dir
	// the mount would hide what it writes to.
	if o.UpperSet {
		for _, l := range []string{o.Upper, o.Work} {
			if within(mnt, l) {
				return fmt.Errorf("mount point %s is inside %s, which the mount writes to", mnt, l)
			}
		}
	}
	return nil
}

// fuseConf is fusermount3's configuration file.
var fuseConf = "/etc/fuse.conf"

// userAllowOther reports whether the fuse.conf at path lets ordinary users
// mount with allow_other: a line "user_allow_other" ("#" starts a comment).
func userAllowOther(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

// checkConnected fails when the mount point p belongs to a FUSE daemon that
// died. stat alone may still answer from the kernel's attribute cache for a
// while; opening the directory always asks the daemon. ECONNABORTED is seen
// while the kernel is still tearing the dead connection down.
func checkConnected(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED) {
			return deadMount(p)
		}
		return nil // resolveDir says what else is wrong
	}
	unix.Close(fd)
	return nil
}

func deadMount(p string) error {
	return fmt.Errorf("%s: transport endpoint is not connected (a dead ovlfs daemon?): run 'fusermount3 -u %s' or 'umount -l %s'", p, p, p)
}

// resolver resolves the directories of one command line. Layers are mostly
// siblings (a stack of 200 lowers in one directory): the parent directories
// it has resolved are kept, so that each further sibling costs one lstat
// instead of one per path component.
type resolver struct {
	parents map[string]string // absolute directory -> its symlink-free form
}

// dir returns the absolute, symlink-free form of the directory p.
func (rs *resolver) dir(what, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%s: empty path", what)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: %v", what, p, err)
	}
	parent, base := filepath.Split(abs)
	parent = filepath.Clean(parent)
	if base != "" && base != "." && base != ".." {
		rp, ok := rs.parents[parent]
		if !ok {
			if rp, err = filepath.EvalSymlinks(parent); err == nil {
				if rs.parents == nil {
					rs.parents = map[string]string{}
				}
				rs.parents[parent] = rp
			}
		}
		var st unix.Stat_t
		if err == nil && unix.Lstat(filepath.Join(rp, base), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return filepath.Join(rp, base), nil
		}
	}
	// A symlink, the root, or an error: the long way, which says what is wrong.
	return resolveDir(what, p)
}

// resolveDir returns the absolute, symlink-free form of the directory p.
func resolveDir(what, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%s: empty path", what)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		if errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED) {
			return "", deadMount(p)
		}
		if errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("%s %s does not exist", what, p)
		}
		return "", fmt.Errorf("%s %s: %v", what, p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("%s %s is not a directory", what, p)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: %v", what, p, err)
	}
	r, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("%s %s: %v", what, p, err)
	}
	return r, nil
}

// within reports whether the clean absolute path p is dir or below it.
func within(p, dir string) bool {
	if p == dir || dir == "/" {
		return true
	}
	return strings.HasPrefix(p, dir+"/")
}
