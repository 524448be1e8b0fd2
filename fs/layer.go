package fs

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// layer is one directory of the stack: the upper (index 0 when there is one) or a
// lower. Every access to a layer goes through fd with *at calls and openat2, so a
// symlink inside the layer can never lead the daemon outside it.
type layer struct {
	idx  int
	path string // for messages only
	fd   int    // O_RDONLY|O_DIRECTORY on the layer root
	// mnt is the private clone of the layer's mount that fd lives in (see
	// privateClone; the upper's holds the work dir too), -1: none.
	mnt   int
	upper bool
	// inoBits is or-ed into the inode numbers of this layer's files so that layers
	// on different filesystems never hand out the same st_ino.
	inoBits uint64
	dev     uint64
	fsType  int64 // statfs f_type
	// override is the xattr that holds the owner and mode this layer's files
	// show (whiteout.OverrideStatNames), "" where they are the real ones.
	override string
	// passthrough: the kernel may serve this layer's files by FUSE
	// passthrough (not a stacked filesystem itself, see stackedFs).
	passthrough bool
	// noatime is a private noatime mount of a lower layer (see
	// noatimeMount), made at the first passthrough open of one of its files.
	noatimeOnce sync.Once
	noatimeFd   int // -1: none
	// noatime, nodiratime: the mount's noatime or nodiratime, for the
	// upper layer: the daemon's own reads of upper files (or directories)
	// must not move their atime either (reads of lower ones never do).
	noatime, nodiratime bool
	// atimeRefused is set once O_NOATIME was refused in this lower layer
	// (files of another owner, for a daemon without CAP_FOWNER).
	atimeRefused atomic.Bool
}

// resolveFlags keep every path walk inside the layer: no symlinks, no "..", no
// magic links, no crossing into other mounts (the kernel overlay does not cross
// mount points inside a layer either).
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS |
	unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// maxWalk is the longest path openat2 is given at once (PATH_MAX is 4096
// with its NUL).
const maxWalk = 4000

// openat2 opens rel (relative to the layer root, "" for the root) with flags,
// never following a symlink in any component.
func (l *layer) openat2(rel string, flags int) (int, error) {
	return l.openat2In(l.fd, rel, flags)
}

// openat2In is openat2 from root, the layer's root directory in some mount.
func (l *layer) openat2In(root int, rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	// Reading a lower layer leaves its access times alone, as the kernel
	// overlay does (it opens lower files and directories O_NOATIME): a
	// lower layer is not written to, not even its inodes' atime.
	noatime := !l.upper && flags&(unix.O_ACCMODE|unix.O_PATH) == unix.O_RDONLY && !l.atimeRefused.Load() ||
		l.upper && flags&unix.O_PATH == 0 && (l.noatime || l.nodiratime && flags&unix.O_DIRECTORY != 0) && !l.atimeRefused.Load()
	if noatime {
		flags |= unix.O_NOATIME
	}
	// A path longer than a syscall takes (PATH_MAX) is walked in pieces,
	// each from the directory the last one opened: the kernel overlay has
	// no limit on the depth of a tree, and neither may we.
	for len(rel) > maxWalk {
		i := strings.LastIndexByte(rel[:maxWalk], '/')
		if i <= 0 {
			return -1, unix.ENAMETOOLONG // no name is longer than 255 bytes
		}
		dfd, err := l.openat2In(root, rel[:i], unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return -1, err
		}
		defer unix.Close(dfd)
		root, rel = dfd, rel[i+1:]
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Resolve: resolveFlags}
	for range 8 {
		fd, err := unix.Openat2(root, rel, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue // a concurrent rename or mount raced the walk: retry
		}
		if err == unix.EPERM && noatime {
			// Not the owner and no CAP_FOWNER: open as the caller would.
			l.atimeRefused.Store(true)
			noatime = false
			how.Flags &^= unix.O_NOATIME
			continue
		}
		if err == unix.ELOOP {
			// A symlink where a directory was expected: not a directory of this layer.
			err = unix.ENOTDIR
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// openDir opens directory rel of the layer for reading entries or as a base for
// *at calls.
func (l *layer) openDir(rel string) (int, error) {
	return l.openat2(rel, unix.O_RDONLY|unix.O_DIRECTORY)
}

// splitPath returns the directory and the last name of a layer-relative path.
func splitPath(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// lstat stats rel without following a symlink at any component.
func (l *layer) lstat(rel string, st *unix.Stat_t) error {
	if rel == "" {
		return unix.Fstat(l.fd, st)
	}
	dir, name := splitPath(rel)
	dfd, err := l.openDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

// shownAt turns st, the real stat of entry name of directory dfd ("": dfd
// itself) of layer l, into the one the layer means: owner and mode from the
// layer's override xattr, where it keeps them there. Without an override it
// makes no system call.
func (l *layer) shownAt(dfd int, name string, st *unix.Stat_t) error {
	if l.override == "" || !whiteout.OverrideFits(st.Mode) {
		return nil
	}
	v, err := getxattrAt(dfd, name, l.override)
	if err != nil || v == nil {
		return err // none: the real owner and mode stand
	}
	o, err := whiteout.ParseOverrideStat(v)
	if err != nil {
		return unix.EIO // a broken override never shows the real, wider, mode instead
	}
	o.Apply(st)
	return nil
}

// lstatShown is lstat with the layer's override applied.
func (l *layer) lstatShown(rel string, st *unix.Stat_t) error {
	if rel == "" {
		if err := unix.Fstat(l.fd, st); err != nil {
			return err
		}
		return l.shownAt(l.fd, "", st)
	}
	dir, name := splitPath(rel)
	dfd, err := l.openDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	return l.shownAt(dfd, name, st)
}

// getxattrAt reads xattr key of entry name of directory dfd ("" for dfd itself).
// It returns nil and no error when the entry has no such xattr.
func getxattrAt(dfd int, name, key string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		var n int
		var err error
		if name == "" {
			n, err = unix.Fgetxattr(dfd, key, buf)
		} else {
			n, err = cow.Getxattrat(dfd, name, key, buf)
		}
		switch {
		case err == nil:
			return buf[:n], nil
		case errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case errors.Is(err, unix.ERANGE) && len(buf) < 1<<16:
			buf = make([]byte, 1<<16)
		default:
			return nil, err
		}
	}
}

// hasXattrAt reports whether entry name of dfd carries xattr key.
func hasXattrAt(dfd int, name, key string) bool {
	v, err := getxattrAt(dfd, name, key)
	return err == nil && v != nil
}

// stackedFs reports whether filesystem type t is stacked on others (overlay,
// FUSE, ecryptfs). The kernel refuses such files as passthrough backing files
// (the stack would get too deep), and go-fuse then turns passthrough off for
// the whole mount: their files are served through the daemon instead.
func stackedFs(t int64) bool {
	switch t {
	case unix.OVERLAYFS_SUPER_MAGIC, unix.FUSE_SUPER_MAGIC, unix.ECRYPTFS_SUPER_MAGIC:
		return true
	}
	return false
}

// noatimeMount returns the root of a private noatime mount of a lower layer:
// a detached clone (open_tree, mount_setattr; invisible to every other
// process, gone when its fd is closed), or -1 where that cannot be made. A
// file passed through is read by the kernel from a file it opens itself with
// the reader's flags, not with the daemon's O_NOATIME: opened through this
// mount, reading it still leaves the lower file's atime alone.
func (l *layer) noatimeMount() int {
	if !l.upper && l.mnt >= 0 {
		return l.mnt // the lower's own clone is noatime already
	}
	l.noatimeOnce.Do(func() {
		fd, err := unix.OpenTree(l.fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
		if err != nil {
			return
		}
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOATIME, Attr_clr: unix.MOUNT_ATTR__ATIME}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			unix.Close(fd)
			return
		}
		l.noatimeFd = fd
	})
	return l.noatimeFd
}

// close closes the layer's fds.
func (l *layer) close() {
	unix.Close(l.fd)
	l.noatimeOnce.Do(func() {}) // no clone made after this
	if l.noatimeFd >= 0 {
		unix.Close(l.noatimeFd)
	}
	if l.mnt >= 0 {
		unix.Close(l.mnt)
	}
}
