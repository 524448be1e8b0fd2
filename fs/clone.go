package fs

import (
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The daemon reaches its layers through private clones of their mounts, as
// the kernel overlay does (clone_private_mount): detached bind mounts that no
// other process sees. The fds it holds then pin the clones, not the caller's
// mount of the filesystem holding the layers, so that filesystem unmounts
// (no EBUSY) as soon as the overlay is unmounted, even while the daemon is
// still on its way out. Only root may make them; elsewhere the layers are
// opened directly (and an ordinary user cannot unmount their filesystem).

// privateClone returns an O_PATH fd on a private clone of the mount holding
// dir, rooted at dir, with the mount attributes set (MOUNT_ATTR_*; 0: as the
// original).
func privateClone(dir string, set uint64) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, err
	}
	attr := unix.MountAttr{Propagation: unix.MS_PRIVATE, Attr_set: set}
	if set&unix.MOUNT_ATTR__ATIME != 0 {
		attr.Attr_clr = unix.MOUNT_ATTR__ATIME
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// openBeneath opens directory rel of the clone mnt and checks that it is
// the directory p names (same device and inode).
func openBeneath(mnt int, rel, p string) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(mnt, rel, &how)
	if err != nil {
		return -1, err
	}
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil || unix.Stat(p, &b) != nil || a.Dev != b.Dev || a.Ino != b.Ino {
		unix.Close(fd)
		return -1, unix.ESTALE
	}
	return fd, nil
}

// openLower opens lower layer p through a private noatime clone (the kernel
// overlay's lower clones are noatime too); mnt is the clone (-1: p was opened
// directly).
func openLower(p string) (fd, mnt int, err error) {
	if mnt, err := privateClone(p, unix.MOUNT_ATTR_NOATIME); err == nil {
		if fd, err := openBeneath(mnt, "", p); err == nil {
			return fd, mnt, nil
		}
		unix.Close(mnt)
	}
	fd, err = unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	return fd, -1, err
}

// openUpperWork opens the upper and work dirs through one private clone (a
// rename between them must stay inside one mount): the clone of their
// nearest common directory, strictatime where asked (the daemon's own reads
// of upper files then move their atime on every read, as the kernel
// overlay's strictatime does). mnt is the clone (-1: both opened directly).
func openUpperWork(upper, work string, strict bool) (ufd, wfd, mnt int, err error) {
	ua, err1 := filepath.Abs(upper)
	wa, err2 := filepath.Abs(work)
	if err1 == nil && err2 == nil {
		anc := commonDir(ua, wa)
		var set uint64
		if strict {
			set = unix.MOUNT_ATTR_STRICTATIME
		}
		if mnt, err := privateClone(anc, set); err == nil {
			ufd, err := openBeneath(mnt, relTo(anc, ua), upper)
			if err == nil {
				wfd, err := openBeneath(mnt, relTo(anc, wa), work)
				if err == nil {
					return ufd, wfd, mnt, nil
				}
				unix.Close(ufd)
			}
			unix.Close(mnt)
		}
	}
	ufd, err = unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, -1, &os.PathError{Op: "open layer", Path: upper, Err: err}
	}
	wfd, err = unix.Open(work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(ufd)
		return -1, -1, -1, &os.PathError{Op: "open workdir", Path: work, Err: err}
	}
	return ufd, wfd, -1, nil
}

// commonDir is the nearest directory holding both clean absolute paths.
func commonDir(a, b string) string {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	n := 0
	for n < len(as) && n < len(bs) && as[n] == bs[n] {
		n++
	}
	if d := strings.Join(as[:n], "/"); d != "" {
		return d
	}
	return "/"
}

// relTo is p relative to its ancestor dir ("" for dir itself).
func relTo(dir, p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
}
