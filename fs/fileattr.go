package fs

import (
	"context"
	"encoding/binary"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// Inode flags (chattr, lsattr): the kernel turns FS_IOC_GETFLAGS/SETFLAGS
// and FS_IOC_FSGETXATTR/FSSETXATTR on a FUSE file into FUSE_IOCTL requests.
// As with the kernel overlay, a file shows the flags of its real inode plus
// the append-only and immutable flags its upper keeps in X(protattr); a change
// copies the file up, puts those two in X(protattr) and the rest on the upper
// inode. The kernel knows nothing of the flags of a FUSE inode, so ovlfs
// refuses what they forbid itself (refuse below).

var _ = (gofs.NodeIoctler)((*node)(nil))

// fsxattrSize is sizeof(struct fsxattr).
const fsxattrSize = 28

func (n *node) Ioctl(ctx context.Context, f gofs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	switch cmd {
	case cow.IocGetFlags:
		if len(output) < 4 {
			return 0, syscall.EINVAL
		}
		flags, errno := n.getFlags()
		if errno != 0 {
			return 0, errno
		}
		binary.NativeEndian.PutUint32(output, flags)
		return 0, 0
	case cow.IocSetFlags:
		if len(input) < 4 {
			return 0, syscall.EINVAL
		}
		return 0, n.setFlags(binary.NativeEndian.Uint32(input), nil)
	case cow.IocFsGetXattr:
		if len(output) < fsxattrSize {
			return 0, syscall.EINVAL
		}
		return 0, n.getFsxattr(output[:fsxattrSize])
	case cow.IocFsSetXattr:
		if len(input) < fsxattrSize {
			return 0, syscall.EINVAL
		}
		fsx := make([]byte, fsxattrSize)
		copy(fsx, input)
		return 0, n.setFlags(0, fsx)
	}
	return 0, syscall.ENOTTY
}

// openShown opens the entry n shows for the fileattr ioctls.
func (n *node) openShown() (int, syscall.Errno) {
	if !n.isDir && n.StableAttr().Mode != unix.S_IFREG {
		return -1, syscall.ENOTTY
	}
	l, p, errno := n.top()
	if errno != 0 {
		return -1, errno
	}
	dir, name := splitPath(p)
	if p == "" {
		dir, name = "", "."
	}
	dfd, err := l.openDir(dir)
	if err != nil {
		return -1, toErrno(err)
	}
	defer unix.Close(dfd)
	fd, err := cow.OpenForFlags(dfd, name, n.isDir)
	return fd, toErrno(err)
}

func (n *node) getFlags() (uint32, syscall.Errno) {
	fd, errno := n.openShown()
	if errno != 0 {
		return 0, errno
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, cow.IocGetFlags)
	if err != nil {
		return 0, toErrno(err)
	}
	return flags | n.prot.Load(), 0
}

func (n *node) getFsxattr(out []byte) syscall.Errno {
	fd, errno := n.openShown()
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	if err := cow.Ioctl(fd, cow.IocFsGetXattr, out); err != nil {
		return toErrno(err)
	}
	x := binary.NativeEndian.Uint32(out)
	p := n.prot.Load()
	if p&cow.FlagAppend != 0 {
		x |= cow.XflagAppend
	}
	if p&cow.FlagImmutable != 0 {
		x |= cow.XflagImmutable
	}
	binary.NativeEndian.PutUint32(out, x)
	return 0
}

// setFlags sets the inode flags of n (FS_IOC_SETFLAGS), or with fsx the
// struct fsxattr (FS_IOC_FSSETXATTR), as the kernel overlay's fileattr_set:
// copy up, keep append-only and immutable in X(protattr) (removed when
// both are cleared), give the upper inode the rest.
func (n *node) setFlags(flags uint32, fsx []byte) syscall.Errno {
	if !n.isDir && n.StableAttr().Mode != unix.S_IFREG {
		return syscall.ENOTTY
	}
	var prot uint32
	if fsx != nil {
		x := binary.NativeEndian.Uint32(fsx)
		if x&cow.XflagAppend != 0 {
			prot |= cow.FlagAppend
		}
		if x&cow.XflagImmutable != 0 {
			prot |= cow.FlagImmutable
		}
		binary.NativeEndian.PutUint32(fsx, x&^(cow.XflagAppend|cow.XflagImmutable))
	} else {
		prot = flags & cow.ProtFlags
	}
	dfd, name, errno := n.upperEntry(false)
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	key := n.root.ns.Key(whiteout.Protattr)
	if v := cow.ProtValue(prot); v != nil {
		if err := unix.Lsetxattr(cow.ProcPath(dfd, name), key, v, 0); err != nil {
			if err == unix.ENOTSUP {
				err = unix.EPERM // as the kernel: no protection without xattrs
			}
			return toErrno(err)
		}
	} else if err := unix.Lremovexattr(cow.ProcPath(dfd, name), key); err != nil && err != unix.ENODATA && err != unix.ENOTSUP {
		return toErrno(err)
	}
	n.prot.Store(prot)
	n.xattrsChanged()
	fd, err := cow.OpenForFlags(dfd, name, n.isDir)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(fd)
	if fsx != nil {
		err = cow.Ioctl(fd, cow.IocFsSetXattr, fsx)
	} else {
		err = unix.IoctlSetPointerInt(fd, cow.IocSetFlags, int(flags&^cow.ProtFlags))
	}
	// The change moved the ctime; the kernel asks for attributes again only
	// when told.
	n.dropCachedAttrs()
	return toErrno(err)
}

// What the append-only and immutable flags forbid, as the VFS checks them
// (may_open, notify_change, may_delete, vfs_link, xattr_permission).

// refuseWrite: opening n for writing (flags of open(2)).
func (n *node) refuseWrite(flags uint32) syscall.Errno {
	p := n.prot.Load()
	switch {
	case p == 0:
		return 0
	case p&cow.FlagImmutable != 0:
		return syscall.EPERM
	case flags&unix.O_APPEND == 0 || flags&unix.O_TRUNC != 0:
		return syscall.EPERM // append-only
	}
	return 0
}

// refuseSetattr: a SETATTR of n; touching the times to now is all an
// append-only file allows.
func (n *node) refuseSetattr(in *fuse.SetAttrIn) syscall.Errno {
	p := n.prot.Load()
	if p == 0 {
		return 0
	}
	touch := uint32(fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW | fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_CTIME)
	if p&cow.FlagImmutable != 0 || in.Valid&^touch != 0 ||
		in.Valid&fuse.FATTR_ATIME != 0 && in.Valid&fuse.FATTR_ATIME_NOW == 0 ||
		in.Valid&fuse.FATTR_MTIME != 0 && in.Valid&fuse.FATTR_MTIME_NOW == 0 {
		return syscall.EPERM
	}
	return 0
}

// refuseChange: changing n itself (its xattrs, a link to it, removing or
// renaming it).
func (n *node) refuseChange() syscall.Errno {
	if n.prot.Load() != 0 {
		return syscall.EPERM
	}
	return 0
}

// refuseCreate: a new name in directory n (immutable forbids it).
func (n *node) refuseCreate() syscall.Errno {
	if n.prot.Load()&cow.FlagImmutable != 0 {
		return syscall.EPERM
	}
	return 0
}

// refuseRemove: removing child res (or renaming it away) from directory n.
func (n *node) refuseRemove(res *found) syscall.Errno {
	if n.prot.Load() != 0 || res != nil && res.prot != 0 {
		return syscall.EPERM
	}
	return 0
}
