package fs

import (
	"cmp"
	"context"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/whiteout"
)

// dirHandle is an open merged directory. Its offsets are cookies derived
// from the names (see cookies), and each READDIR serves the directory as it
// is at that moment, from the first name past the reader's cookie, as a disk
// filesystem does: a name present all along is listed exactly once, and
// nothing older than the request is served. That is what the kernel's
// readdir cache (FOPEN_CACHE_DIR) needs: it is one per directory, appended to
// by whichever reader is at its end, and entries from a listing older than
// the version the cache was started at would stay in it.
type dirHandle struct {
	n *node
	// l and fd (O_PATH, -1: none) hold the directory shown at opendir, so
	// that fstat still answers once it is removed or renamed over while
	// open, as on the kernel overlay.
	l    *layer
	fd   int
	mu   sync.Mutex
	req  context.Context // the request last served
	gen  uint64          // n.dirGen when ents was taken
	ents []fuse.DirEntry // nil until the first read
	pos  int             // index in ents of the next entry
	off  uint64          // cookie of the last entry served, 0 at the start
	// dirs holds the layer directories the lookups of the request dirsReq
	// (READDIRPLUS) look into.
	dirs    dirFds
	dirsReq context.Context
}

var (
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileFsyncdirer)((*dirHandle)(nil))
	_ = (gofs.FileLookuper)((*dirHandle)(nil))
	_ = (gofs.FileReleasedirer)((*dirHandle)(nil))
)

// Lookup answers the lookups of READDIRPLUS. A child the kernel already holds
// gets no attributes (an entry with node id 0, which the kernel skips): its
// dentry is cached, and a full lookup of every entry would make a warm tree
// walk cost as much as a cold one.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if h.n.GetChild(name) != nil {
		return nil, syscall.ENOENT
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ctx != h.dirsReq {
		// A new request: what the last one opened is not trusted any more.
		h.dirs.closeAll()
		h.dirsReq = ctx
	}
	if h.dirs == nil {
		h.dirs = dirFds{}
	}
	return h.n.lookupWith(ctx, name, out, h.dirs)
}

// Fsyncdir syncs the directory's upper copy; a directory only in lower layers
// has nothing that could be lost.
func (h *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	n := h.n
	if n.root.cfg.NoFsync || !n.inUpper() {
		return 0
	}
	p, errno := n.pathOf(layerEntry{layer: 0})
	if errno != 0 {
		return errno
	}
	fd, err := n.root.upper.openDir(p)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(fd)
	return toErrno(unix.Fsync(fd))
}

// OpendirHandle lets the kernel cache the listing (FOPEN_CACHE_DIR): every
// change of a directory's names made through the mount bumps its version in
// the kernel, which drops the cache at the next opendir.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	h := &dirHandle{n: n, fd: -1}
	if l, p, errno := n.top(); errno == 0 {
		if fd, err := l.openat2(p, unix.O_PATH|unix.O_DIRECTORY); err == nil {
			h.l, h.fd = l, fd
		}
	}
	return h, fuse.FOPEN_CACHE_DIR, 0
}

func (h *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if h.fd >= 0 {
		unix.Close(h.fd)
	}
	h.mu.Lock()
	h.dropStaleLocked()
	h.dirs.closeAll()
	h.mu.Unlock()
}

// dropStaleLocked makes the kernel drop the directory's readdir cache where
// the entries this handle served last may be older than it: the directory
// changed since they were listed. The kernel appends to its cache whichever
// reply is at the cache's end when it arrives, and a reply listed before a
// change can arrive after another reader has started the cache anew past that
// change (a reader descheduled between our reply and its processing); the
// cache would then miss the change until the next one. By the time this
// handle sends its next request (or releases), its last reply is in the
// cache, and dropping the cache's pages makes the kernel start it again.
// Preconditions: h.mu is locked.
func (h *dirHandle) dropStaleLocked() {
	if h.ents != nil && h.n.dirGen.Load() != h.gen {
		h.n.NotifyContent(0, 0)
	}
}

// syncLocked takes the current listing at the first entry of a request when
// the directory changed since the handle's listing was taken (a request is
// served from one listing, so a directory changed all the time is not merged
// again for every entry).
// Preconditions: h.mu is locked.
func (h *dirHandle) syncLocked(ctx context.Context) syscall.Errno {
	if h.ents == nil || ctx != h.req && h.n.dirGen.Load() != h.gen {
		h.dropStaleLocked()
		gen := h.n.dirGen.Load()
		ents, errno := h.n.mergedEntries()
		if errno != 0 {
			return errno
		}
		h.ents, h.gen = ents, gen
		h.pos = after(ents, h.off)
	}
	h.req = ctx
	return 0
}

// after returns the index of the first entry of ents past the cookie off.
func after(ents []fuse.DirEntry, off uint64) int {
	i, _ := slices.BinarySearchFunc(ents, off+1, func(e fuse.DirEntry, off uint64) int {
		return cmp.Compare(e.Off, off)
	})
	return i
}

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if errno := h.syncLocked(ctx); errno != 0 {
		return nil, errno
	}
	if h.pos >= len(h.ents) {
		return nil, 0
	}
	de := h.ents[h.pos]
	h.pos++
	h.off = de.Off
	return &de, 0
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.off = off
	h.pos = after(h.ents, off)
	return 0
}

// mergedEntries lists the merged directory n: "." and "..", then the names of
// every layer of its stack, where a higher name masks lower ones and a name
// whose topmost entry is a whiteout is dropped; markers are never listed. Each
// entry's Off is its cookie, and the listing is sorted by it: "." is 1, ".."
// is 2, a name's is a hash of the name (see cookies). The listing is merged
// once and kept until the directory changes.
func (n *node) mergedEntries() ([]fuse.DirEntry, syscall.Errno) {
	gen := n.dirGen.Load()
	if l := n.list.Load(); l != nil && l.gen == gen {
		return l.ents, 0
	}
	ents, errno := n.mergeEntries()
	if errno != 0 {
		return nil, errno
	}
	n.root.cookies(ents[2:])
	if n.dirGen.Load() == gen {
		n.list.Store(&listing{gen: gen, ents: ents})
	}
	return ents, errno
}

// listing is a merged directory's entries, kept until the directory changes.
// The slice is shared: readers never modify it.
type listing struct {
	gen  uint64
	ents []fuse.DirEntry
}

// changed drops n's cached listing; every change of a directory's names made
// through the mount calls it once the change is done.
func (n *node) changed() {
	n.dirGen.Add(1)
	n.list.Store(nil)
}

// mergeEntries merges the listing of n from its layers.
func (n *node) mergeEntries() ([]fuse.DirEntry, syscall.Errno) {
	var st unix.Stat_t
	ents := []fuse.DirEntry{{Name: ".", Mode: unix.S_IFDIR, Off: 1}, {Name: "..", Mode: unix.S_IFDIR, Off: 2}}
	stack := n.entries()
	seen := make(map[string]struct{})
	ns := n.root.ns
	for _, e := range stack {
		l := n.root.layers[e.layer]
		p, errno := n.pathOf(e)
		if errno != 0 {
			return nil, errno
		}
		dfd, err := l.openDir(p)
		if err != nil {
			return nil, toErrno(err)
		}
		raw, err := readDirents(dfd)
		if err != nil {
			unix.Close(dfd)
			return nil, toErrno(err)
		}
		xattrWh := false
		if !l.upper {
			v, _ := getxattrAt(dfd, "", ns.Key(whiteout.Opaque))
			xattrWh = whiteout.ClassifyOpaque(v) == whiteout.HasXattrWhiteouts
		}
		// ".wh.N" hides N in its own layer too, whatever the order of entries.
		var hidden map[string]struct{}
		for _, d := range raw {
			if h := whiteout.HiddenBy(d.name); h != "" {
				if hidden == nil {
					hidden = make(map[string]struct{})
				}
				hidden[h] = struct{}{}
			}
		}
		for _, d := range raw {
			if d.name == "." || d.name == ".." || whiteout.IsMarkerName(d.name) {
				continue
			}
			if _, ok := seen[d.name]; ok {
				continue
			}
			seen[d.name] = struct{}{}
			if _, ok := hidden[d.name]; ok {
				continue
			}
			mode := dtToMode(d.typ)
			if d.typ == unix.DT_CHR || d.typ == unix.DT_UNKNOWN || (xattrWh && d.typ == unix.DT_REG) {
				if err := unix.Fstatat(dfd, d.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					continue // gone meanwhile
				}
				mode = st.Mode & unix.S_IFMT
				if whiteout.IsWhiteoutStat(&st) {
					continue
				}
				if xattrWh && mode == unix.S_IFREG && st.Size == 0 && hasXattrAt(dfd, d.name, ns.Key(whiteout.Whiteout)) {
					continue
				}
			}
			ents = append(ents, fuse.DirEntry{Name: d.name, Mode: mode, Ino: l.inoBits | d.ino})
		}
		for h := range hidden {
			seen[h] = struct{}{}
		}
		unix.Close(dfd)
	}
	return ents, 0
}

// cookies gives each entry its readdir offset, a hash of its name in
// [3, 2^62+3) (offsets are positive loff_t, 1 and 2 are "." and ".."), and
// sorts ents by it. A name keeps its cookie for the life of the mount whatever
// else the directory holds. Two names of one directory with the same hash
// (about n^2/2^64 odds, the seed is random per mount) get consecutive
// cookies, so offsets stay unique.
func (r *Root) cookies(ents []fuse.DirEntry) {
	for i := range ents {
		ents[i].Off = maphash.String(r.cookieSeed, ents[i].Name)>>2 + 3
	}
	slices.SortFunc(ents, func(a, b fuse.DirEntry) int {
		if c := cmp.Compare(a.Off, b.Off); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for i := 1; i < len(ents); i++ {
		if ents[i].Off <= ents[i-1].Off {
			ents[i].Off = ents[i-1].Off + 1
		}
	}
}

type rawDirent struct {
	name string
	ino  uint64
	typ  uint8
}

// readDirents reads every entry of the open directory fd.
func readDirents(fd int) ([]rawDirent, error) {
	var out []rawDirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
			reclen := int(*(*uint16)(unsafe.Pointer(&b[16])))
			if reclen <= 19 || reclen > len(b) {
				return nil, unix.EIO
			}
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			out = append(out, rawDirent{
				ino:  *(*uint64)(unsafe.Pointer(&b[0])),
				typ:  b[18],
				name: string(name),
			})
			b = b[reclen:]
		}
	}
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	}
	return 0
}
