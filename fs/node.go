package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// layerEntry places a merged entry in one layer.
type layerEntry struct {
	layer int32
	// path inside the layer when it differs from the path derived from the
	// parent's entry in the same layer plus this node's name (after a redirect);
	// "" means derived. Nodes carry no path strings otherwise: the tree is the path.
	path string
}

// node is a merged file or directory. Its stack lists where it lives, topmost
// first: for a directory the layers whose directories are merged, for a
// non-directory the entry that is shown, then (metacopy) the entry holding data.
type node struct {
	gofs.Inode
	root *Root

	mu    sync.Mutex
	stack []layerEntry // never modified in place: replaced whole under mu
	isDir bool
	// metacopy: stack[0] holds the metadata and stack[1] the data.
	metacopy bool
	// gen counts copy-ups, so that open handles move to the upper copy.
	gen uint32
	// copiedAs is the upper file of a non-directory copied up by this mount.
	copiedAs copiedKey

	// copyMu serialises copy-ups of this node.
	copyMu sync.Mutex
	// idx indexes the names of a directory's lower layers (nil: not built).
	idx atomic.Pointer[dirIndex]
	// cachedOpens counts open handles served without passthrough.
	cachedOpens atomic.Int32
	// dirGen counts changes of a directory's names; list caches its listing.
	dirGen atomic.Uint64
	list   atomic.Pointer[listing]
	// xattrs: the low bits say which of absentXattrs the file is known not
	// to have, the high 32 bits count changes of its xattrs (see Getxattr).
	xattrs atomic.Uint64
	// lowerCtime is the ctime (ns) of a lower file as last shown to the
	// kernel, to notice a lower layer changed behind the mount (0: none).
	lowerCtime atomic.Int64
	// prot has the append-only and immutable flags the file shows
	// (cow.ProtFlags), which ovlfs enforces: the kernel knows nothing of
	// them on a FUSE inode.
	prot atomic.Uint32
	// ptOpens counts the open handles of a file that the kernel serves by
	// FUSE passthrough, all from one backing file; ptLower says that file
	// is in a lower layer. Under mu, and changed only by requests that hold
	// the node's open lock (see rawFS.Open).
	ptOpens int32
	ptLower bool
	// ptWriters counts the writable ones among them: the kernel then
	// writes the backing file itself (also through shared mappings),
	// and n's attributes are shown uncached (see attrTimeout).
	ptWriters int32
}

var (
	_ = (gofs.NodeLookuper)((*node)(nil))
	_ = (gofs.NodeGetattrer)((*node)(nil))
	_ = (gofs.NodeReadlinker)((*node)(nil))
	_ = (gofs.NodeOpener)((*node)(nil))
	_ = (gofs.NodeStatfser)((*node)(nil))
	_ = (gofs.NodeGetxattrer)((*node)(nil))
	_ = (gofs.NodeListxattrer)((*node)(nil))
	_ = (gofs.NodeOpendirHandler)((*node)(nil))
)

func (n *node) entries() []layerEntry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stack
}

// entryIn returns n's entry in layer li.
func (n *node) entryIn(li int32) (layerEntry, bool) {
	for _, e := range n.entries() {
		if e.layer == li {
			return e, true
		}
	}
	return layerEntry{}, false
}

// pathOf returns the path of n's entry e inside its layer.
func (n *node) pathOf(e layerEntry) (string, syscall.Errno) {
	if e.path != "" || n.IsRoot() {
		return e.path, 0
	}
	name, parent := n.Parent()
	if parent == nil {
		return "", syscall.ESTALE // unlinked: only open handles reach it
	}
	p := parent.Operations().(nodeOps).ovl()
	pe, ok := p.entryIn(e.layer)
	if !ok {
		return "", syscall.EIO
	}
	pp, errno := p.pathOf(pe)
	if errno != 0 {
		return "", errno
	}
	return joinPath(pp, name), 0
}

// nodeOps is implemented by node and Root, so that a parent found through the
// go-fuse tree can be turned back into an ovlfs node.
type nodeOps interface{ ovl() *node }

func (n *node) ovl() *node { return n }

// top returns the layer and path of the entry that is shown.
func (n *node) top() (*layer, string, syscall.Errno) {
	st := n.entries()
	if len(st) == 0 {
		return nil, "", syscall.ESTALE
	}
	p, errno := n.pathOf(st[0])
	return n.root.layers[st[0].layer], p, errno
}

// data returns the layer and path of the entry holding the file's data.
func (n *node) data() (*layer, string, syscall.Errno) {
	n.mu.Lock()
	st, mc := n.stack, n.metacopy
	n.mu.Unlock()
	if mc && len(st) > 1 {
		p, errno := n.pathOf(st[1])
		return n.root.layers[st[1].layer], p, errno
	}
	return n.top()
}

// stat fills out with the attributes the kernel overlay shows for n.
func (n *node) stat(out *fuse.Attr) syscall.Errno {
	l, p, errno := n.top()
	if errno != 0 {
		return errno
	}
	var st unix.Stat_t
	if err := l.lstatShown(p, &st); err != nil {
		return toErrno(err)
	}
	n.fillAttr(l, &st, out)
	if n.metacopy {
		if dl, dp, errno := n.data(); errno == 0 {
			var dst unix.Stat_t
			if dl.lstat(dp, &dst) == nil {
				out.Blocks = uint64(dst.Blocks)
			}
		}
	}
	return 0
}

// fillAttr converts a layer's stat of n's top entry to what the mount shows.
func (n *node) fillAttr(l *layer, st *unix.Stat_t, out *fuse.Attr) {
	attrFromStat(st, out)
	out.Uid, out.Gid = n.root.ids.view(st.Uid, st.Gid)
	out.Ino = l.inoBits | st.Ino
	if !l.upper && !n.isDir {
		n.lowerCtime.Store(st.Ctim.Nano())
	}
	if n.isDir && (n.root.cfg.StaticNlink || len(n.entries()) > 1) {
		// A merged directory has no meaningful link count (the kernel says 1).
		out.Nlink = 1
	}
}

// uncached is the attribute timeout that tells rawFS to send 0: go-fuse
// replaces a zero timeout by the mount's.
const uncached = time.Nanosecond

// liveAttrs reports whether n's attributes may change without a request
// (a writable passthrough open), and so must not be cached by the kernel.
func (n *node) liveAttrs() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ptWriters > 0
}

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.liveAttrs() {
		out.SetTimeout(uncached)
	}
	errno := n.stat(&out.Attr)
	if errno == 0 && out.Attr.Mode&unix.S_IFMT != n.StableAttr().Mode&unix.S_IFMT && !n.IsRoot() {
		// The path now names another object (renamed over since the
		// lookup): never show its attributes as this node's.
		errno = syscall.ESTALE
	}
	if errno == syscall.ESTALE {
		// Unlinked while open, or an O_TMPFILE not linked in yet.
		if fh, ok := f.(*fileHandle); ok {
			return fh.stat(&out.Attr)
		}
		if n.isDir {
			if g, ok := n.root.goneDir(n); ok {
				var st unix.Stat_t
				if err := unix.Fstat(g.fd, &st); err != nil {
					return toErrno(err)
				}
				n.fillAttr(g.l, &st, &out.Attr)
				return 0
			}
		}
		if fd, ok := n.tmpfileFd(); ok {
			var st unix.Stat_t
			if err := n.root.fstatShown(fd, &st); err != nil {
				return toErrno(err)
			}
			n.fillAttr(n.root.upper, &st, &out.Attr)
			return 0
		}
	}
	return errno
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	l, p, errno := n.top()
	if errno == syscall.ESTALE {
		return nil, syscall.ENOENT // renamed over or unlinked since the lookup, as in Open
	}
	if errno != 0 {
		return nil, errno
	}
	dir, name := splitPath(p)
	dfd, err := l.openDir(dir)
	if err != nil {
		return nil, toErrno(err)
	}
	defer unix.Close(dfd)
	buf := make([]byte, unix.PathMax)
	for {
		sz, err := unix.Readlinkat(dfd, name, buf)
		if err != nil {
			return nil, toErrno(err)
		}
		if sz < len(buf) {
			return buf[:sz], 0
		}
		buf = make([]byte, 2*len(buf))
	}
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(n.root.layers[0].fd, &st); err != nil {
		return toErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

// fstatShown stats an open file that has no name in the layers (unlinked while
// open, or an O_TMPFILE): an upper file, with the upper layer's override.
func (r *Root) fstatShown(fd int, st *unix.Stat_t) error {
	if err := unix.Fstat(fd, st); err != nil {
		return err
	}
	if r.upper == nil {
		return nil
	}
	return r.upper.shownAt(fd, "", st)
}

func attrFromStat(st *unix.Stat_t, out *fuse.Attr) {
	out.Ino = st.Ino
	out.Size = uint64(st.Size)
	out.Blocks = uint64(st.Blocks)
	out.Atime, out.Atimensec = uint64(st.Atim.Sec), uint32(st.Atim.Nsec)
	out.Mtime, out.Mtimensec = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec)
	out.Ctime, out.Ctimensec = uint64(st.Ctim.Sec), uint32(st.Ctim.Nsec)
	out.Mode = st.Mode
	out.Nlink = uint32(st.Nlink)
	out.Uid, out.Gid = st.Uid, st.Gid
	out.Rdev = uint32(st.Rdev)
	out.Blksize = uint32(st.Blksize)
}
