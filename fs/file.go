package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
)

// fileHandle is an open regular file: an fd on the layer file that holds the
// data. A read-only handle opened before a copy-up moves to the upper copy on
// its next read, as the kernel overlay's stacked files do.
type fileHandle struct {
	n        *node
	mu       sync.Mutex
	fd       int
	flags    int
	gen      uint32
	writable bool
	noFsync  bool
	// lowerCtime is the ctime (ns) of a lower file when it was opened (0:
	// the file is in the upper layer, which only the mount changes); under mu.
	lowerCtime int64
	// cached: the kernel serves this open through FUSE requests (and its page
	// cache), not through passthrough to the layer file.
	cached bool
}

var (
	_ = (gofs.FileReader)((*fileHandle)(nil))
	_ = (gofs.FileWriter)((*fileHandle)(nil))
	_ = (gofs.FileReleaser)((*fileHandle)(nil))
	_ = (gofs.FileLseeker)((*fileHandle)(nil))
	_ = (gofs.FileFsyncer)((*fileHandle)(nil))
	_ = (gofs.FileFlusher)((*fileHandle)(nil))
	_ = (gofs.FileAllocater)((*fileHandle)(nil))
	_ = (gofs.FileGetlker)((*fileHandle)(nil))
	_ = (gofs.FileSetlker)((*fileHandle)(nil))
	_ = (gofs.FileSetlkwer)((*fileHandle)(nil))
	_ = (gofs.NodeCopyFileRanger)((*node)(nil))
)

// openFlags are the open(2) flags passed on to the layer file.
const openFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_DIRECT | unix.O_SYNC | unix.O_DSYNC | unix.O_NOATIME

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	write := flags&(unix.O_WRONLY|unix.O_RDWR) != 0
	if write || flags&unix.O_TRUNC != 0 {
		if errno := n.copyUp(flags&unix.O_TRUNC != 0); errno != 0 {
			return nil, 0, errno
		}
	}
	fl := int(flags) & openFlags
	if flags&unix.O_TRUNC != 0 {
		fl |= unix.O_TRUNC
	}
	var st unix.Stat_t
	fd, errno := n.openData(fl, &st)
	if errno != 0 {
		return nil, 0, errno
	}
	h := n.newHandle(fd, flags)
	if !n.inUpper() {
		h.lowerCtime = st.Ctim.Nano()
		if shown := n.lowerCtime.Load(); shown != 0 && shown != h.lowerCtime {
			// The lower file changed behind the mount since the kernel was
			// shown it: make it drop the size and pages it holds, or it
			// would mix them with the new data.
			n.NotifyContent(0, 0)
		}
	}
	// The page cache stays valid across opens: every write goes through the
	// mount, and the kernel drops pages whose file changed size or mtime.
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// openData opens the file holding n's data with the open(2) flags fl and
// fills st with its attributes.
func (n *node) openData(fl int, st *unix.Stat_t) (int, syscall.Errno) {
	l, p, errno := n.data()
	if errno == syscall.ESTALE {
		return -1, syscall.ENOENT // renamed over or unlinked since the lookup
	}
	if errno != 0 {
		return -1, errno
	}
	fd, err := l.openat2(p, fl&^unix.O_NOATIME)
	if err == unix.ENOTDIR {
		// A symlink where this file or a directory above it was: the name
		// was renamed over since the kernel looked it up. The file it named
		// is gone (as for a node renamed over: pathOf).
		return -1, syscall.ENOENT
	}
	if err != nil {
		return -1, toErrno(err)
	}
	// Only regular files are opened here; anything else now at the path is
	// another object, and the file this node was is gone.
	if err := unix.Fstat(fd, st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, syscall.ENOENT
	}
	return fd, 0
}

func (n *node) newHandle(fd int, flags uint32) *fileHandle {
	n.mu.Lock()
	gen := n.gen
	n.mu.Unlock()
	h := &fileHandle{
		n: n, fd: fd, gen: gen,
		flags:    int(flags) & openFlags &^ unix.O_TRUNC,
		writable: flags&(unix.O_WRONLY|unix.O_RDWR) != 0,
		noFsync:  n.root.cfg.NoFsync,
	}
	if !n.root.passthrough || !n.inUpper() {
		h.setCached()
	}
	return h
}

func (f *fileHandle) setCached() {
	f.cached = true
	f.n.cachedOpens.Add(1)
}

var _ = (gofs.FilePassthroughFder)((*fileHandle)(nil))

// PassthroughFd lets the kernel read and write an upper file directly (FUSE
// passthrough, root only). go-fuse asks once per node while no open of it is
// passed through, and then passes every later open through too. The kernel
// refuses to mix passthrough and cached opens of one inode, so a node with
// cached opens (made while its file was in a lower layer, which must not be
// passed through as a copy-up would leave it behind) is not passed through.
func (f *fileHandle) PassthroughFd() (int, bool) {
	if f.cached || f.n.cachedOpens.Load() > 0 {
		if !f.cached {
			f.setCached()
		}
		return -1, false
	}
	return f.fd, true
}

// current returns the fd to use, reopening a read-only handle whose file was
// copied up since it was opened.
func (f *fileHandle) current() (int, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.writable {
		f.n.mu.Lock()
		gen := f.n.gen
		f.n.mu.Unlock()
		if gen != f.gen {
			var st unix.Stat_t
			fd, errno := f.n.openData(f.flags, &st)
			if errno == 0 {
				unix.Close(f.fd)
				f.fd, f.gen, f.lowerCtime = fd, gen, 0 // now the upper copy
			}
		}
	}
	return f.fd, 0
}

func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	fd, errno := f.current()
	if errno != 0 {
		return nil, errno
	}
	n, err := unix.Pread(fd, dest, off)
	if err != nil {
		return nil, toErrno(err)
	}
	f.mu.Lock()
	lc := f.lowerCtime
	f.mu.Unlock()
	if lc != 0 {
		// A lower file changed behind the mount since this open: the kernel
		// may hold its old size and pages, and these bytes would mix with
		// them. (No notify here: it would wait on the pages this read fills.)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Ctim.Nano() != lc {
			return nil, syscall.ESTALE
		}
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := unix.Pwrite(f.fd, data, off)
	return uint32(n), toErrno(err)
}

func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cached {
		f.n.cachedOpens.Add(-1)
	}
	return toErrno(unix.Close(f.fd))
}

// Flush answers ENOSYS, which tells the kernel never to send FLUSH again on
// this mount: a close(2) then costs the daemon no round trip. Like the kernel
// overlay, which calls the upper file's flush only where its filesystem has
// one, there is nothing to flush: writes reach the layer file as they come
// (no writeback cache), the local filesystems that hold layers report no
// errors at close, and POSIX locks are released by their own unlock request.
func (f *fileHandle) Flush(ctx context.Context) syscall.Errno {
	return syscall.ENOSYS
}

func (f *fileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if f.noFsync {
		return 0
	}
	if flags&1 != 0 { // FUSE_FSYNC_FDATASYNC
		return toErrno(unix.Fdatasync(f.fd))
	}
	return toErrno(unix.Fsync(f.fd))
}

func (f *fileHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	fd, errno := f.current()
	if errno != 0 {
		return 0, errno
	}
	n, err := unix.Seek(fd, int64(off), int(whence))
	return uint64(n), toErrno(err)
}

func (f *fileHandle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return toErrno(unix.Fallocate(f.fd, mode, int64(off), int64(size)))
}

func (f *fileHandle) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	errno := toErrno(syscall.FcntlFlock(uintptr(f.fd), unix.F_OFD_GETLK, &flk))
	out.FromFlockT(&flk)
	return errno
}

func (f *fileHandle) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.setLock(lk, flags, false)
}

func (f *fileHandle) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.setLock(lk, flags, true)
}

// setLock takes POSIX record locks (as open file description locks) and flock
// locks on the real backing file.
func (f *fileHandle) setLock(lk *fuse.FileLock, flags uint32, wait bool) syscall.Errno {
	if flags&fuse.FUSE_LK_FLOCK != 0 {
		var op int
		switch lk.Typ {
		case syscall.F_RDLCK:
			op = unix.LOCK_SH
		case syscall.F_WRLCK:
			op = unix.LOCK_EX
		case syscall.F_UNLCK:
			op = unix.LOCK_UN
		default:
			return syscall.EINVAL
		}
		if !wait {
			op |= unix.LOCK_NB
		}
		return toErrno(unix.Flock(f.fd, op))
	}
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	return toErrno(syscall.FcntlFlock(uintptr(f.fd), cmd, &flk))
}

func (n *node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, size uint64, flags uint64) (uint32, syscall.Errno) {
	in, ok1 := fhIn.(*fileHandle)
	o, ok2 := fhOut.(*fileHandle)
	if !ok1 || !ok2 {
		return 0, syscall.EBADF
	}
	ifd, errno := in.current()
	if errno != 0 {
		return 0, errno
	}
	i, j := int64(offIn), int64(offOut)
	c, err := unix.CopyFileRange(ifd, &i, o.fd, &j, int(size), int(flags))
	return uint32(c), toErrno(err)
}

// stat answers for a file that has no name any more through its open fd.
func (f *fileHandle) stat(out *fuse.Attr) syscall.Errno {
	fd, errno := f.current()
	if errno != 0 {
		return errno
	}
	var st unix.Stat_t
	if err := f.n.root.fstatShown(fd, &st); err != nil {
		return toErrno(err)
	}
	attrFromStat(&st, out)
	out.Uid, out.Gid = f.n.root.ids.view(st.Uid, st.Gid)
	return 0
}

// procPath names the open file itself, for the *at calls that follow it.
func (f *fileHandle) procPath() string { return cow.ProcPath(f.fd, "") }
