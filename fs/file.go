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
	// setID: a writable open of a set-ID file; its writes drop the bits
	// as the kernel's do (see Write).
	setID bool
	// lower: fd is a file of a lower layer. pt: the kernel serves this open
	// by passthrough, from the node's backing file (see PassthroughFd).
	lower, pt bool
	// created: the open that made the file, whose attributes the kernel
	// has only from the reply to this request (see dropCachedAttrs).
	created bool
}

var (
	_ = (gofs.FileReader)((*fileHandle)(nil))
	_ = (gofs.FileWriter)((*fileHandle)(nil))
	_ = (gofs.FileReleaser)((*fileHandle)(nil))
	_ = (gofs.FileLseeker)((*fileHandle)(nil))
	_ = (gofs.FileFsyncer)((*fileHandle)(nil))
	_ = (gofs.FileFlusher)((*fileHandle)(nil))
	_ = (gofs.FileAllocater)((*fileHandle)(nil))
	_ = (gofs.NodeCopyFileRanger)((*node)(nil))
)

// openFlags are the open(2) flags passed on to the layer file.
const openFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_DIRECT | unix.O_SYNC | unix.O_DSYNC | unix.O_NOATIME

// The caller holds n's open lock (rawFS.Open).
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	write := flags&(unix.O_WRONLY|unix.O_RDWR) != 0
	if write || flags&unix.O_TRUNC != 0 {
		if errno := n.refuseWrite(flags); errno != 0 {
			return nil, 0, errno
		}
		if n.lowerBacked() {
			return nil, 0, n.retire(flags&unix.O_TRUNC != 0)
		}
		if errno := n.copyUp(flags&unix.O_TRUNC != 0); errno != 0 {
			return nil, 0, errno
		}
	}
	fl := int(flags) & openFlags
	if flags&unix.O_TRUNC != 0 {
		fl |= unix.O_TRUNC
	}
	var st unix.Stat_t
	fd, l, pt, errno := n.openData(fl, &st)
	if errno != 0 {
		return nil, 0, errno
	}
	h := n.newHandle(fd, flags, !l.upper, pt)
	h.setID = h.writable && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0
	if flags&unix.O_TRUNC != 0 {
		if errno := n.truncKill(ctx, h, l, &st); errno != 0 {
			h.Release(ctx)
			return nil, 0, errno
		}
	}
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
	if n.root.cfg.StrictAtime {
		return h, 0, 0 // the next read reaches the upper file (see Config)
	}
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// openData opens the file holding n's data with the open(2) flags fl and
// fills st with its attributes; l is the layer of the file, and pt says that
// the kernel may serve the open by passthrough from fd: a file opened for
// writing or one of at least ptMinSize, where passthrough is allowed, a
// lower one opened through the layer's noatime mount.
func (n *node) openData(fl int, st *unix.Stat_t) (fd int, l *layer, pt bool, errno syscall.Errno) {
	l, p, errno := n.data()
	if errno == syscall.ESTALE {
		return -1, nil, false, syscall.ENOENT // renamed over or unlinked since the lookup
	}
	if errno != 0 {
		return -1, nil, false, errno
	}
	fd, err := l.openat2(p, fl&^unix.O_NOATIME)
	if err == unix.ENOTDIR {
		// A symlink where this file or a directory above it was: the name
		// was renamed over since the kernel looked it up. The file it named
		// is gone (as for a node renamed over: pathOf).
		return -1, nil, false, syscall.ENOENT
	}
	if err != nil {
		return -1, nil, false, toErrno(err)
	}
	// Only regular files are opened here; anything else now at the path is
	// another object, and the file this node was is gone.
	if err := unix.Fstat(fd, st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, nil, false, syscall.ENOENT
	}
	write := fl&unix.O_ACCMODE != unix.O_RDONLY
	// Writes to a set-ID file come to the daemon, which drops the bits as
	// the kernel does (the passed-through write would keep them).
	setID := write && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0
	if !n.root.passthrough.Load() || !l.passthrough || !write && st.Size < ptMinSize || setID {
		return fd, l, false, 0
	}
	if l.upper {
		return fd, l, true, 0
	}
	// A lower file (opened read-only: writes copy up first) is passed
	// through only from the layer's noatime mount.
	mfd := l.noatimeMount()
	if mfd < 0 {
		return fd, l, false, 0
	}
	nfd, err := l.openat2In(mfd, p, fl&^unix.O_NOATIME)
	if err != nil {
		return fd, l, false, 0
	}
	var nst unix.Stat_t
	if err := unix.Fstat(nfd, &nst); err != nil || nst.Ino != st.Ino || nst.Dev != st.Dev {
		unix.Close(nfd) // renamed meanwhile: keep the one opened first
		return fd, l, false, 0
	}
	unix.Close(fd)
	return nfd, l, true, 0
}

// truncKill drops the set-ID bits of a file that open(O_TRUNC) just emptied
// or fallocate changed (h, a file of layer l whose attributes were st) when
// the caller lacks CAP_FSETID, as the kernel does for a truncate: the
// set-user-ID bit, and
// the set-group-ID bit of a group-executable file or of a group the caller
// is not in. The FUSE kernel module leaves that out where the daemon
// truncates in OPEN (ATOMIC_O_TRUNC), so ovlfs does it itself.
func (n *node) truncKill(ctx context.Context, h *fileHandle, l *layer, st *unix.Stat_t) syscall.Errno {
	mode := st.Mode
	_, gid := n.root.ids.view(st.Uid, st.Gid)
	if l.override != "" {
		var a fuse.AttrOut
		if errno := n.Getattr(ctx, h, &a); errno != 0 {
			return errno
		}
		mode, gid = a.Mode, a.Gid
	}
	var kill uint32
	if mode&unix.S_ISUID != 0 {
		kill |= unix.S_ISUID
	}
	if mode&unix.S_ISGID != 0 && (mode&unix.S_IXGRP != 0 || !callerInGroup(ctx, gid)) {
		kill |= unix.S_ISGID
	}
	if kill == 0 || callerHasFsetid(ctx) {
		return 0
	}
	in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE, Mode: mode & 0o7777 &^ kill}}
	return n.Setattr(ctx, h, &in, &fuse.AttrOut{})
}

// ptMinSize is the size from which a file opened read-only is served by
// passthrough. Below it the page cache serves it better: a cached file read
// again costs no request at all, while a passthrough open costs two ioctls
// and makes the kernel ask for the attributes again after every read (it
// drops the atime it knows); a cold read of a small file is one READ request.
const ptMinSize = 64 << 10

// newHandle makes the handle of an open of n: fd is a file of a lower layer
// or of the upper one. Where the kernel already serves opens of n by
// passthrough (the caller holds n's open lock: no open or release of n runs
// meanwhile), go-fuse gives this one the same backing file. Otherwise it is
// offered for passthrough (PassthroughFd) if pt (see openData), and the
// kernel serves it from its page cache if not.
func (n *node) newHandle(fd int, flags uint32, lower, pt bool) *fileHandle {
	h := &fileHandle{
		n: n, fd: fd,
		flags:    int(flags) & openFlags &^ unix.O_TRUNC,
		writable: flags&(unix.O_WRONLY|unix.O_RDWR) != 0,
		noFsync:  n.root.cfg.NoFsync,
		lower:    lower,
	}
	n.mu.Lock()
	h.gen = n.gen
	first := false
	if n.ptOpens > 0 {
		n.ptOpens++
		h.pt = true
		if h.writable {
			n.ptWriters++
			first = n.ptWriters == 1
		}
	}
	n.mu.Unlock()
	if first {
		n.dropCachedAttrs()
	}
	if !h.pt && !pt {
		h.setCached()
	}
	return h
}

// lowerBacked reports whether the kernel serves opens of n by passthrough
// from a lower file. The caller holds n's open lock.
func (n *node) lowerBacked() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ptOpens > 0 && n.ptLower
}

func (f *fileHandle) setCached() {
	f.cached = true
	f.n.cachedOpens.Add(1)
}

var _ = (gofs.FilePassthroughFder)((*fileHandle)(nil))

// PassthroughFd lets the kernel read and write the layer file directly (FUSE
// passthrough, root only). go-fuse asks once per node while no open of it is
// passed through, and then passes every later open through too, with the
// same backing file (newHandle counts those). The kernel refuses to mix
// passthrough and cached opens of one inode, so a node with cached opens is
// not passed through. A lower file passed through stays the backing file of
// the node while it is open: a change of its data then gives the file a new
// node (retire).
func (f *fileHandle) PassthroughFd() (int, bool) {
	n := f.n
	if f.cached || n.cachedOpens.Load() > 0 {
		if !f.cached {
			f.setCached()
		}
		return -1, false
	}
	n.mu.Lock()
	n.ptOpens++
	n.ptLower = f.lower
	first := false
	if f.writable {
		n.ptWriters++
		first = n.ptWriters == 1
	}
	n.mu.Unlock()
	if first && !f.created {
		n.dropCachedAttrs()
	}
	f.pt = true
	return f.fd, true
}

// dropCachedAttrs makes the kernel forget n's attributes when a writable
// passthrough open begins: from then on the kernel writes the backing file
// itself (also through shared mappings, which move its mtime), and a stat
// must ask again rather than show what was cached before the open. The
// replies given while such opens last are not cached (attrTimeout). Only
// attributes are dropped (offset -1), which takes no lock the open holds.
func (n *node) dropCachedAttrs() {
	n.NotifyContent(-1, 0)
}

// current returns the fd to use, reopening a read-only handle whose file was
// copied up since it was opened.
func (f *fileHandle) current() (int, syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// A passthrough handle reads its backing file whatever happens to the
	// node: its fd stays that file too.
	if !f.writable && !f.pt {
		f.n.mu.Lock()
		gen := f.n.gen
		f.n.mu.Unlock()
		if gen != f.gen {
			var st unix.Stat_t
			fd, _, _, errno := f.n.openData(f.flags, &st)
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
	if err == nil && f.setID {
		// The FUSE module drops S_ISUID, and S_ISGID of a group-executable
		// file, before a write; the kernel also drops S_ISGID where the
		// writer is outside the file's group.
		var st unix.Stat_t
		if unix.Fstat(f.fd, &st) == nil && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			if errno := f.n.truncKill(ctx, f, f.n.root.upper, &st); errno != 0 {
				return uint32(n), errno
			}
		}
	}
	return uint32(n), toErrno(err)
}

func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cached {
		f.n.cachedOpens.Add(-1)
	}
	if f.pt {
		f.n.mu.Lock()
		f.n.ptOpens--
		if f.writable {
			f.n.ptWriters--
		}
		f.n.mu.Unlock()
	}
	return toErrno(unix.Close(f.fd))
}

// Flush answers ENOSYS, which tells the kernel never to send FLUSH again on
// this mount: a close(2) then costs the daemon no round trip. Like the kernel
// overlay, which calls the upper file's flush only where its filesystem has
// one, there is nothing to flush: writes reach the layer file as they come
// (no writeback cache), the local filesystems that hold layers report no
// errors at close, and locks are the kernel's own (see Root.options).
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
	// As vfs_fallocate on the kernel overlay's inode: immutable refuses
	// all, append-only all but a plain allocation (opened before the flag).
	if p := f.n.prot.Load(); p&cow.FlagImmutable != 0 || p&cow.FlagAppend != 0 && mode&^unix.FALLOC_FL_KEEP_SIZE != 0 {
		return syscall.EPERM
	}
	if err := unix.Fallocate(f.fd, mode, int64(off), int64(size)); err != nil {
		return toErrno(err)
	}
	// The kernel drops set-ID bits after fallocate, hole punching and
	// zeroing by a writer without CAP_FSETID; the FUSE module leaves it to
	// the daemon, which itself has the capability.
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil || st.Mode&(unix.S_ISUID|unix.S_ISGID) == 0 {
		return 0
	}
	return f.n.truncKill(ctx, f, f.n.root.upper, &st)
}

func (n *node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, size uint64, flags uint64) (uint32, syscall.Errno) {
	in, ok1 := fhIn.(*fileHandle)
	o, ok2 := fhOut.(*fileHandle)
	if !ok1 || !ok2 {
		return 0, syscall.EBADF
	}
	if o.n.prot.Load()&cow.FlagImmutable != 0 {
		return 0, syscall.EPERM // made immutable since it was opened (generic_copy_file_checks)
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
