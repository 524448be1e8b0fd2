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
	n    *node
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

// OpendirHandle lets the kernel cache the listing (FOPEN_CACHE_DIR). Where
// the kernel supports it, OPENDIR is not even sent (see rawFS) and each
// READDIR gets a handle of its own. Opening touches no layer.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR, 0
}

func (h *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	h.mu.Lock()
	h.dirs.closeAll()
	h.mu.Unlock()
}

// goneDir is a directory removed or renamed over: the layer and an O_PATH fd
// of the directory it showed.
type goneDir struct {
	l  *layer
	fd int
}

// pinGoneDir keeps the directory c, about to be removed or renamed over, for
// as long as the kernel knows its node (until OnForget): fstat of a directory
// open meanwhile still answers on the kernel overlay, as on any disk
// filesystem. Without OPENDIR the daemon cannot tell which directories are
// open; the kernel forgets a removed directory once nobody uses it.
func (r *Root) pinGoneDir(c *node) {
	if c == nil || !c.isDir {
		return
	}
	l, p, errno := c.top()
	if errno != 0 {
		return
	}
	fd, err := l.openat2(p, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return
	}
	r.goneMu.Lock()
	defer r.goneMu.Unlock()
	if r.gone == nil {
		r.gone = map[*node]goneDir{}
	}
	if old, ok := r.gone[c]; ok {
		unix.Close(old.fd)
	}
	r.gone[c] = goneDir{l: l, fd: fd}
}

// goneDir returns the directory pinned for n.
func (r *Root) goneDir(n *node) (goneDir, bool) {
	r.goneMu.Lock()
	defer r.goneMu.Unlock()
	g, ok := r.gone[n]
	return g, ok
}

// unpinDir drops what pinGoneDir kept for n.
func (r *Root) unpinDir(n *node) {
	r.goneMu.Lock()
	defer r.goneMu.Unlock()
	if g, ok := r.gone[n]; ok {
		unix.Close(g.fd)
		delete(r.gone, n)
	}
}

// syncLocked takes the current listing at the first entry of a request when
// the directory changed since the handle's listing was taken (a request is
// served from one listing, so a directory changed all the time is not merged
// again for every entry).
//
// The kernel's readdir cache (one per directory) appends each reply whose
// position is the cache's end when it is parsed, whichever listing it came
// from; a reply listed before a change and parsed after another reader has
// started the cache anew past that change would stay in it. Cookies carry
// the low bits of the listing's version (see cookies), so such a reply at a
// position past the start never matches the end of a cache built from a
// newer listing. A reply from the start (position 0) can land in a new cache;
// the request that continues from it, at a position of the old listing, is
// noticed here and makes the kernel drop the cache's pages (it then starts
// the cache again at its next cached read). A reader that simply crosses a
// change costs one such drop.
// Preconditions: h.mu is locked.
func (h *dirHandle) syncLocked(ctx context.Context) syscall.Errno {
	if h.ents == nil || ctx != h.req && h.n.dirGen.Load() != h.gen {
		ents, gen, errno := h.n.mergedEntries()
		if errno != 0 {
			return errno
		}
		h.ents, h.gen = ents, gen
		h.pos = after(ents, h.off)
	}
	if ctx != h.req && h.off != 0 && h.off&cookieGenMask != h.gen&cookieGenMask {
		h.n.NotifyContent(0, 0)
	}
	h.req = ctx
	return 0
}

// after returns the index of the first entry of ents past the cookie off,
// which may come from an older listing (only its name hash counts).
func after(ents []fuse.DirEntry, off uint64) int {
	i, _ := slices.BinarySearchFunc(ents, off>>cookieGenBits+1, func(e fuse.DirEntry, h uint64) int {
		return cmp.Compare(e.Off>>cookieGenBits, h)
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
// entry's Off is its cookie, and the listing is sorted by it ("." first, ".."
// second, then by a hash of the name: see cookies). The listing is merged once
// and kept until the directory changes; gen is the version it was taken at.
func (n *node) mergedEntries() ([]fuse.DirEntry, uint64, syscall.Errno) {
	gen := n.dirGen.Load()
	if l := n.list.Load(); l != nil && l.gen == gen {
		return l.ents, gen, 0
	}
	ents, errno := n.mergeEntries()
	if errno != 0 {
		return nil, 0, errno
	}
	n.root.cookies(ents, gen)
	if n.dirGen.Load() == gen {
		n.list.Store(&listing{gen: gen, ents: ents})
	}
	return ents, gen, errno
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

// cookieGenBits low bits of each readdir offset carry the listing's version
// (the directory's dirGen), so that positions of listings taken before and
// after a change differ (see syncLocked).
const (
	cookieGenBits = 8
	cookieGenMask = 1<<cookieGenBits - 1
)

// cookies gives each entry of the listing ents (taken at version gen) its
// readdir offset and sorts ents by it. An offset is a name part, 1 for ".",
// 2 for ".." and a hash of the name in [3, 2^54+3) for the others, shifted
// left by cookieGenBits and tagged with the low bits of gen (offsets are
// positive loff_t). A name keeps its name part for the life of the mount
// whatever else the directory holds, so a reader carries on from the right
// place across changes. Two names of one directory with the same hash (about
// n^2/2^55 odds, the seed is random per mount) get consecutive name parts, so
// offsets stay unique.
func (r *Root) cookies(ents []fuse.DirEntry, gen uint64) {
	names := ents[2:]
	for i := range names {
		names[i].Off = maphash.String(r.cookieSeed, names[i].Name)>>(2+cookieGenBits) + 3
	}
	slices.SortFunc(names, func(a, b fuse.DirEntry) int {
		if c := cmp.Compare(a.Off, b.Off); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for i := 1; i < len(names); i++ {
		if names[i].Off <= names[i-1].Off {
			names[i].Off = names[i-1].Off + 1
		}
	}
	tag := gen & cookieGenMask
	for i := range ents {
		ents[i].Off = ents[i].Off<<cookieGenBits | tag
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
