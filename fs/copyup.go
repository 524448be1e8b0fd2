package fs

import (
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// inUpper reports whether n's shown entry is in the upper layer.
func (n *node) inUpper() bool {
	st := n.entries()
	return n.root.upper != nil && len(st) > 0 && st[0].layer == 0
}

// hasLower reports whether some lower layer contributes to n.
func (n *node) hasLower() bool {
	for _, e := range n.entries() {
		if e.layer != 0 || n.root.upper == nil {
			return true
		}
	}
	return false
}

// parentNode returns n's directory and n's name in it.
func (n *node) parentNode() (*node, string, syscall.Errno) {
	name, p := n.Parent()
	if p == nil {
		return nil, "", syscall.ESTALE
	}
	return p.Operations().(nodeOps).ovl(), name, 0
}

// upperDir opens n's directory in the upper layer, copying it up first.
func (n *node) upperDir() (int, syscall.Errno) {
	if errno := n.copyUp(false); errno != 0 {
		return -1, errno
	}
	p, errno := n.pathOf(layerEntry{layer: 0})
	if errno != 0 {
		return -1, errno
	}
	fd, err := n.root.upper.openDir(p)
	return fd, toErrno(err)
}

// copyUp gives n an entry in the upper layer: parents first, then n itself, built
// in the scratch dir and renamed into place. noData skips the data of a regular
// file (it is about to be truncated).
func (n *node) copyUp(noData bool) syscall.Errno {
	r := n.root
	if r.upper == nil {
		return syscall.EROFS
	}
	if n.inUpper() {
		return 0 // fast path
	}
	parent, name, errno := n.parentNode()
	if errno != 0 {
		return errno
	}
	dfd, errno := parent.upperDir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)

	n.copyMu.Lock()
	defer n.copyMu.Unlock()
	if n.inUpper() {
		return 0 // another request copied it up meanwhile
	}
	return n.copyUpLocked(dfd, name, noData)
}

// copyUpLocked copies n to name in the upper directory dfd.
// Preconditions: n.copyMu is locked; n is not in the upper layer.
func (n *node) copyUpLocked(dfd int, name string, noData bool) syscall.Errno {
	r := n.root
	l, p, errno := n.top()
	if errno != 0 {
		return errno
	}
	sdir, sname := splitPath(p)
	sfd, err := l.openDir(sdir)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(sfd)
	mc := n.isMetacopy()
	opts := cow.CopyOptions{NoData: noData || mc, Override: r.upper.override}
	if l.override != "" {
		// The copy shows what the source shows, whoever owns it for real.
		var st unix.Stat_t
		if err := unix.Fstatat(sfd, sname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return toErrno(err)
		}
		if err := l.shownAt(sfd, sname, &st); err != nil {
			return toErrno(err)
		}
		opts.Shown = &whiteout.OverrideStat{Uid: st.Uid, Gid: st.Gid, Mode: st.Mode & 0o7777}
	}
	if errno := r.setImpure(dfd); errno != 0 {
		return errno
	}
	if err := r.scratch.CopyUp(sfd, sname, dfd, name, opts); err != nil {
		return toErrno(err)
	}
	if mc && !noData {
		// A lower metacopy file: its data lives further down.
		if errno := n.copyMetacopyData(dfd, name); errno != 0 {
			unix.Unlinkat(dfd, name, 0)
			return errno
		}
	}
	if !n.isDir {
		var st unix.Stat_t
		if btime, err := statxAt(dfd, name, &st); err == nil {
			n.copiedAs = copiedKey{r.upper.inoBits | st.Ino, btime}
			r.copied.Store(n.copiedAs, n.StableAttr())
		}
	}
	n.mu.Lock()
	if n.isDir {
		n.stack = append([]layerEntry{{layer: 0}}, n.stack...)
	} else {
		n.stack = []layerEntry{{layer: 0}}
		n.metacopy = false
	}
	n.gen++
	n.mu.Unlock()
	n.xattrsChanged() // the copy may carry a label the upper filesystem gave it
	return 0
}

func (n *node) isMetacopy() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.metacopy
}

// copyMetacopyData fills the upper copy name of dfd with the data of n's data
// entry.
func (n *node) copyMetacopyData(dfd int, name string) syscall.Errno {
	dl, dp, errno := n.data()
	if errno != 0 {
		return errno
	}
	src, err := dl.openat2(dp, unix.O_RDONLY)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(src)
	dst, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(dst)
	var st unix.Stat_t
	if err := unix.Fstat(dst, &st); err != nil {
		return toErrno(err)
	}
	return toErrno(cow.CopyRange(src, dst, st.Size))
}

var _ = (gofs.NodeOnForgetter)((*node)(nil))

// OnForget drops what the root remembers of a node the kernel forgot.
func (n *node) OnForget() {
	if v, ok := n.root.tmpfiles.LoadAndDelete(n); ok {
		unix.Close(v.(int))
	}
	if n.copiedAs.ino != 0 {
		n.root.copied.CompareAndDelete(n.copiedAs, n.StableAttr())
	}
	if n.isDir {
		n.root.unpinDir(n)
	}
}

// retire answers a change of n's data (an open for writing, a truncate) while
// the kernel serves opens of n by passthrough from its lower file. Those opens
// keep that file as their backing file until they are closed, and the kernel
// gives every open of an inode the same backing file: the change cannot be
// made on this inode. retire copies n up, gives the file a new identity
// (renew), and returns ESTALE: the kernel then redoes the open or truncate
// once with a fresh lookup, which finds a new inode, backed by the copy. The
// opens made before keep reading the lower file (see README: Limits).
// The caller holds n's open lock.
func (n *node) retire(noData bool) syscall.Errno {
	if errno := n.copyUp(noData); errno != 0 {
		return errno
	}
	r := n.root
	old := n.StableAttr()
	id := old
	id.Gen = r.renewSeq.Add(1) << 1 // even: lookups' own generations are 0 or odd
	r.renewed.Store(old, id)
	r.nRenewed.Add(1)
	n.copyMu.Lock()
	if n.copiedAs.ino != 0 {
		r.copied.Store(n.copiedAs, id)
	}
	n.copyMu.Unlock()
	return syscall.ESTALE
}

// renew returns the identity that replaced id, if a node of id was retired.
func (r *Root) renew(id gofs.StableAttr) gofs.StableAttr {
	if r.nRenewed.Load() == 0 {
		return id
	}
	for {
		v, ok := r.renewed.Load(id)
		if !ok {
			return id
		}
		id = v.(gofs.StableAttr)
	}
}

// setImpure marks the upper directory dfd X(impure)=y, as the kernel marks a
// directory before it first holds an entry copied up or moved in with an
// origin or a redirect: readdir then knows to show such entries' origin
// inode numbers.
func (r *Root) setImpure(dfd int) syscall.Errno {
	key := r.ns.Key(whiteout.Impure)
	if v, _ := getxattrAt(dfd, "", key); v != nil {
		return 0
	}
	err := unix.Fsetxattr(dfd, key, []byte("y"), 0)
	if err != nil && err != unix.ENOTSUP {
		return toErrno(err)
	}
	return 0
}
