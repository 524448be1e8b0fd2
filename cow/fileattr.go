package cow

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/whiteout"
)

// Inode flags (linux/fs.h), as FS_IOC_GETFLAGS and chattr(1) see them.
const (
	FlagSync      = 0x8
	FlagImmutable = 0x10
	FlagAppend    = 0x20
	FlagNoatime   = 0x80
	// ProtFlags never go on an upper inode: as with the kernel overlay they
	// live in X(protattr), so that the daemon can still link the file into
	// place and set overlay xattrs on it.
	ProtFlags = FlagAppend | FlagImmutable
	// copiedFlags are the flags a copy-up carries to the upper inode.
	copiedFlags = FlagSync | FlagNoatime
)

// The fileattr ioctls a FUSE server is asked (struct fsxattr is 28 bytes).
const (
	IocGetFlags   = 0x80086601
	IocSetFlags   = 0x40086602
	IocFsGetXattr = 0x801c581f
	IocFsSetXattr = 0x401c5820
	// XflagImmutable and XflagAppend are ProtFlags in fsx_xflags.
	XflagImmutable = 0x8
	XflagAppend    = 0x10
)

// ProtValue is the X(protattr) value of flags: 'a' append-only, 'i'
// immutable; nil when neither is set.
func ProtValue(flags uint32) []byte {
	var v []byte
	if flags&FlagAppend != 0 {
		v = append(v, 'a')
	}
	if flags&FlagImmutable != 0 {
		v = append(v, 'i')
	}
	return v
}

// ParseProt returns the flags an X(protattr) value holds.
func ParseProt(v []byte) uint32 {
	var f uint32
	for _, c := range v {
		switch c {
		case 'a', 'A':
			f |= FlagAppend
		case 'i', 'I':
			f |= FlagImmutable
		}
	}
	return f
}

// OpenForFlags opens entry name of dfd (a regular file or a directory, the
// only types with inode flags) for the fileattr ioctls.
func OpenForFlags(dfd int, name string, dir bool) (int, error) {
	fl := unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if dir {
		fl |= unix.O_DIRECTORY
	}
	if name == "" {
		name = "."
	}
	fd, err := unix.Openat(dfd, name, fl|unix.O_NOATIME, 0)
	if err == unix.EPERM {
		fd, err = unix.Openat(dfd, name, fl, 0)
	}
	return fd, err
}

// noFlags says that a filesystem keeps no inode flags.
func noFlags(err error) bool {
	return err == unix.ENOTTY || err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ENOSYS
}

// copyFileattr carries the inode flags of srcName to tmp as the kernel
// overlay's copy-up does: append-only and immutable into X(protattr), sync
// and noatime onto the new inode; other flags stay behind.
func (s *Scratch) copyFileattr(srcDir int, srcName, tmp string, typ uint32) error {
	if typ != unix.S_IFREG && typ != unix.S_IFDIR {
		return nil
	}
	fd, err := OpenForFlags(srcDir, srcName, typ == unix.S_IFDIR)
	if err != nil {
		return &os.PathError{Op: "copyup flags", Path: srcName, Err: err}
	}
	flags, err := unix.IoctlGetUint32(fd, IocGetFlags)
	unix.Close(fd)
	if noFlags(err) {
		return nil
	} else if err != nil {
		return &os.PathError{Op: "copyup flags", Path: srcName, Err: err}
	}
	if v := ProtValue(flags); v != nil {
		err := unix.Lsetxattr(ProcPath(s.fd, tmp), s.ns.Key(whiteout.Protattr), v, 0)
		if err != nil && err != unix.EPERM && err != unix.ENOTSUP {
			return &os.PathError{Op: "copyup protattr", Path: srcName, Err: err}
		}
	}
	if flags&copiedFlags == 0 {
		return nil
	}
	if fd, err = OpenForFlags(s.fd, tmp, typ == unix.S_IFDIR); err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := changeFlags(fd, copiedFlags, flags&copiedFlags); !noFlags(err) {
		return err
	}
	return nil
}

// changeFlags gives the inode of fd the flags set in place of those in mask
// (FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS where that changes anything).
func changeFlags(fd int, mask, set uint32) error {
	cur, err := unix.IoctlGetUint32(fd, IocGetFlags)
	if err != nil || cur&^mask|set == cur {
		return err
	}
	return unix.IoctlSetPointerInt(fd, IocSetFlags, int(cur&^mask|set))
}

// ext4's inherited inode flags (EXT4_FL_INHERITED, those that can be set)
// and the ones a non-directory does not take (EXT4_REG_FLMASK).
const (
	ext4Inherited   = 0x8 | 0x40 | 0x80 | 0x4000 | 0x8000 | 0x10000 | 0x20000000 | 0x02000000
	ext4DirOnly     = 0x10000 | 0x20000 | 0x20000000 // DIRSYNC, TOPDIR, PROJINHERIT
	flagProjInherit = 0x20000000
)

// InheritFlags gives entry name of directory dir (built in the scratch dir)
// the inode flags and project ID an ext4 directory parent passes to what is
// made in it, as if it had been made there: the kernel overlay makes a new
// object right in the upper directory (unless it replaces a whiteout), so
// the filesystem's inheritance applies. Best effort, as the filesystem's
// own: a flag that cannot be set is left off.
func InheritFlags(parent, dir int, name string, isDir bool) {
	pflags, err := unix.IoctlGetUint32(parent, IocGetFlags)
	if err != nil || pflags&ext4Inherited == 0 {
		return
	}
	want := pflags & ext4Inherited
	if !isDir {
		want &^= ext4DirOnly
	}
	fd, err := OpenForFlags(dir, name, isDir)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	if want != 0 {
		changeFlags(fd, want, want)
	}
	if pflags&flagProjInherit != 0 {
		var pfsx, fsx [28]byte
		if Ioctl(parent, IocFsGetXattr, pfsx[:]) == nil && Ioctl(fd, IocFsGetXattr, fsx[:]) == nil {
			copy(fsx[12:16], pfsx[12:16]) // fsx_projid
			Ioctl(fd, IocFsSetXattr, fsx[:])
		}
	}
}

// Ioctl runs ioctl req on fd with buf as its argument.
func Ioctl(fd int, req uintptr, buf []byte) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&buf[0])))
	if e != 0 {
		return e
	}
	return nil
}
