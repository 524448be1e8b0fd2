package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var _ = (gofs.NodeTmpfiler)((*node)(nil))

// Tmpfile answers open(O_TMPFILE): an unnamed file made with O_TMPFILE in the
// upper directory itself (so nothing is ever visible under a name until the
// client links it in through Link).
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	dfd, errno := n.upperDir()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer unix.Close(dfd)
	fl := int(flags) & (openFlags &^ unix.O_ACCMODE)
	fd, err := unix.Openat(dfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC|fl, mode&0o7777&^n.newUmask(ctx, dfd))
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	var st unix.Stat_t
	if errno := n.setOwner(ctx, dfd, fd, ""); errno != 0 {
		unix.Close(fd)
		return nil, nil, 0, errno
	}
	if err := n.root.fstatShown(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, toErrno(err)
	}
	keep, err := unix.Dup(fd)
	if err != nil {
		unix.Close(fd)
		return nil, nil, 0, toErrno(err)
	}
	child := &node{root: n.root}
	n.root.tmpfiles.Store(child, keep)
	ino := n.root.upper.inoBits | st.Ino
	in := n.NewInode(ctx, child, gofs.StableAttr{Mode: unix.S_IFREG, Ino: ino})
	child.fillAttr(n.root.upper, &st, &out.Attr)
	return in, child.newHandle(fd, uint32(unix.O_RDWR|fl), false, n.root.newFilePT(unix.O_RDWR)), 0, 0
}

// tmpfileFd returns the fd of an unnamed O_TMPFILE node.
func (n *node) tmpfileFd() (int, bool) {
	v, ok := n.root.tmpfiles.Load(n)
	if !ok {
		return -1, false
	}
	return v.(int), true
}

// named records that an O_TMPFILE node got its name: from now on it is an
// ordinary upper file.
func (n *node) named() {
	if v, ok := n.root.tmpfiles.LoadAndDelete(n); ok {
		unix.Close(v.(int))
	}
	n.mu.Lock()
	n.stack = []layerEntry{{layer: 0}}
	n.gen++
	n.mu.Unlock()
	n.xattrsChanged()
}
