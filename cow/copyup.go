package cow

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/whiteout"
)

// Owner is who a new object belongs to.
type Owner struct{ Uid, Gid uint32 }

// CopyOptions say how CopyUp copies.
type CopyOptions struct {
	// NoData skips the data of a regular file (it is about to be truncated).
	NoData bool
	// Shown, when set, is the owner and mode the source shows (its layer keeps
	// them in an override xattr); the copy gets these instead of the real ones.
	Shown *whiteout.OverrideStat
	// Override names the xattr where the upper layer keeps owner and mode
	// (xattr_permissions=); "" sets them for real.
	Override string
}

// CopyUp copies entry srcName of directory srcDir (a lower layer) to dstName in
// directory dstDir (the upper layer): the object is built in the scratch dir with
// its mode, owner, times and xattrs (except overlay metadata), then renamed into
// place. Regular files get their data unless o.NoData (open with O_TRUNC);
// directories get no entries; FIFOs, sockets and devices are made with mknod.
// An entry at dstName (a whiteout) is replaced.
func (s *Scratch) CopyUp(srcDir int, srcName string, dstDir int, dstName string, o CopyOptions) error {
	var st unix.Stat_t
	if err := unix.Fstatat(srcDir, srcName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "copyup stat", Path: srcName, Err: err}
	}
	tmp := s.TempName()
	undo := func() { removeAt(s.fd, tmp) }
	if err := s.build(srcDir, srcName, &st, tmp, o); err != nil {
		undo()
		return &os.PathError{Op: "copyup", Path: srcName, Err: err}
	}
	if err := unix.Renameat(s.fd, tmp, dstDir, dstName); err != nil {
		undo()
		return &os.PathError{Op: "copyup rename", Path: dstName, Err: err}
	}
	return nil
}

// build makes the copy of srcName (stat st) as tmp in the scratch dir.
func (s *Scratch) build(srcDir int, srcName string, st *unix.Stat_t, tmp string, o CopyOptions) error {
	perm := st.Mode & 0o7777
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(s.fd, tmp, 0o700); err != nil {
			return err
		}
	case unix.S_IFREG:
		dfd, err := unix.Openat(s.fd, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		if !o.NoData && st.Size > 0 {
			err = copyData(srcDir, srcName, dfd, st.Size)
		}
		if cerr := unix.Close(dfd); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := readlinkAt(srcDir, srcName)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, s.fd, tmp); err != nil {
			return err
		}
	default: // FIFO, socket, char or block device
		if err := unix.Mknodat(s.fd, tmp, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return err
		}
	}
	shown := whiteout.OverrideStat{Uid: st.Uid, Gid: st.Gid, Mode: perm}
	if o.Shown != nil {
		shown = *o.Shown
	}
	return s.finish(srcDir, srcName, tmp, shown, st.Mode&unix.S_IFMT, o.Override, &st.Atim, &st.Mtim)
}

// finish gives tmp its xattrs, owner, mode and times, in the order that keeps
// setuid/setgid bits (chown clears them, so chmod comes after). Where the
// upper layer keeps owners in the override xattr, tmp gets that instead.
//
// Every xattr comes before owner and mode: an ordinary user (rootless
// through fusermount3) may set user.* xattrs only on a file it may write,
// and the copy of a 0444 file is writable only until its mode is set.
func (s *Scratch) finish(srcDir int, srcName, tmp string, shown whiteout.OverrideStat, typ uint32, override string, atime, mtime *unix.Timespec) error {
	if err := CopyXattrs(ProcPath(srcDir, srcName), ProcPath(s.fd, tmp), s.ns); err != nil {
		return err
	}
	if err := s.copyFileattr(srcDir, srcName, tmp, typ); err != nil {
		return err
	}
	// X(origin) lets a later mount (ovlfs or the kernel) keep the lower inode
	// number of the copy.
	if o := Origin(srcDir, srcName); o != nil {
		if err := unix.Lsetxattr(ProcPath(s.fd, tmp), s.ns.Key(whiteout.Origin), o, 0); err != nil && err != unix.ENOTSUP && err != unix.EPERM {
			// EPERM: user.* xattrs on a symlink; the origin is optional.
			return &os.PathError{Op: "copyup origin", Path: srcName, Err: err}
		}
	}
	ts := []unix.Timespec{*atime, *mtime}
	if override != "" && whiteout.OverrideFits(typ) {
		if err := SetOverride(s.fd, tmp, override, shown, typ); err != nil {
			return err
		}
		return unix.UtimesNanoAt(s.fd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	uid, gid, perm := shown.Uid, shown.Gid, shown.Mode
	if err := unix.Fchownat(s.fd, tmp, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil && err != unix.EPERM && err != unix.EINVAL {
		// EPERM/EINVAL: an unprivileged daemon (rootless, or an ID unmapped in
		// its user namespace) keeps the copy as its own, as fuse-overlayfs does.
		return err
	}
	if typ != unix.S_IFLNK {
		if err := unix.Fchmodat(s.fd, tmp, perm, 0); err != nil {
			return err
		}
	}
	return unix.UtimesNanoAt(s.fd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// SetOverride records owner and mode o of entry name of directory dfd ("":
// dfd itself) in the override xattr, and gives the entry (of file type typ)
// its backing mode. The real owner stays the daemon's.
func SetOverride(dfd int, name, override string, o whiteout.OverrideStat, typ uint32) error {
	var err error
	if name == "" {
		err = unix.Fsetxattr(dfd, override, o.Format(), 0)
	} else {
		err = unix.Lsetxattr(ProcPath(dfd, name), override, o.Format(), 0)
	}
	if err != nil {
		return &os.PathError{Op: "setxattr " + override, Path: name, Err: err}
	}
	if typ == unix.S_IFLNK {
		return nil
	}
	if name == "" {
		return unix.Fchmod(dfd, BackingPerm(o.Mode, typ))
	}
	return unix.Fchmodat(dfd, name, BackingPerm(o.Mode, typ), 0)
}

// BackingPerm is the real mode of a file whose mode lives in an override
// xattr: the shown permission bits, with the owner's always set (the daemon
// owns the file and must read and write it, also without privileges) and
// setuid, setgid and sticky left out (on disk they would belong to the
// daemon's owner, not to the shown one).
func BackingPerm(perm, typ uint32) uint32 {
	if typ == unix.S_IFDIR {
		return perm&0o777 | 0o700
	}
	return perm&0o777 | 0o600
}

func readlinkAt(dfd int, name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	for {
		n, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// copyData copies size bytes of srcName into dst: a reflink where the filesystem
// shares extents, else copy_file_range over the data segments, keeping holes.
func copyData(srcDir int, srcName string, dst int, size int64) error {
	src, err := unix.Openat(srcDir, srcName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	if unix.IoctlFileClone(dst, src) == nil {
		return nil
	}
	return CopyRange(src, dst, size)
}

// CopyRange copies the first size bytes of src to dst at the same offsets, only
// the data segments (SEEK_DATA/SEEK_HOLE), then sets dst's size.
func CopyRange(src, dst int, size int64) error {
	var off int64
	for off < size {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			data = off // no SEEK_DATA here: copy everything
		}
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if hole > size {
			hole = size
		}
		for data < hole {
			in, out := data, data
			n, err := unix.CopyFileRange(src, &in, dst, &out, int(hole-data), 0)
			if err != nil {
				if err == unix.EXDEV || err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP {
					n, err = preadCopy(src, dst, data, hole-data)
				}
				if err != nil {
					return err
				}
			}
			if n == 0 {
				return io.ErrUnexpectedEOF // the file shrank under us
			}
			data += int64(n)
		}
		off = hole
	}
	return unix.Ftruncate(dst, size)
}

func preadCopy(src, dst int, off, n int64) (int, error) {
	buf := make([]byte, min(n, 1<<20))
	r, err := unix.Pread(src, buf, off)
	if err != nil || r == 0 {
		return 0, err
	}
	return unix.Pwrite(dst, buf[:r], off)
}

// CopyXattrs copies every xattr of the src path to the dst path (both taken with
// the l*xattr calls, so never followed) except overlay metadata of ns and
// fuse-overlayfs's private keys. Xattrs the destination filesystem refuses are
// an error, except where it has no xattrs at all.
func CopyXattrs(src, dst string, ns whiteout.NS) error {
	names, err := Llistxattr(src)
	if err != nil {
		return err
	}
	for _, k := range names {
		if whiteout.IsPrivateXattr(k, ns) {
			continue
		}
		v, err := Lgetxattr(src, k)
		if err != nil {
			if err == unix.ENODATA {
				continue
			}
			return err
		}
		if err := unix.Lsetxattr(dst, k, v, 0); err != nil {
			if err == unix.ENOTSUP {
				continue
			}
			return &os.PathError{Op: "setxattr " + k, Path: dst, Err: err}
		}
	}
	return nil
}
