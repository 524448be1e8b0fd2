package fs

import (
	"context"
	"sync"
	"syscall"
	"unsafe"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/whiteout"
)

// dirHandle is an open merged directory. The listing is merged once, at the
// first read (not at opendir, so that it is as fresh as the first READDIR), and
// offsets (index+1) stay stable for seekdir/telldir while it is open.
type dirHandle struct {
	n *node
	// l and fd (O_PATH, -1: none) hold the directory shown at opendir, so
	// that fstat still answers once it is removed or renamed over while
	// open, as on the kernel overlay.
	l    *layer
	fd   int
	mu   sync.Mutex
	ents []fuse.DirEntry // nil until the first read
	pos  int
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
	return h.n.Lookup(ctx, name, out)
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

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	// No FOPEN_CACHE_DIR: with it, readdir under concurrent creates in the
	// same directory missed names the reader had just made (TestRelLoad).
	h := &dirHandle{n: n, fd: -1}
	if l, p, errno := n.top(); errno == 0 {
		if fd, err := l.openat2(p, unix.O_PATH|unix.O_DIRECTORY); err == nil {
			h.l, h.fd = l, fd
		}
	}
	return h, 0, 0
}

func (h *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if h.fd >= 0 {
		unix.Close(h.fd)
	}
}

// loadLocked merges the listing if that has not happened yet.
// Preconditions: h.mu is locked.
func (h *dirHandle) loadLocked() syscall.Errno {
	if h.ents != nil {
		return 0
	}
	ents, errno := h.n.mergedEntries()
	if errno != 0 {
		return errno
	}
	h.ents = ents
	return 0
}

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if errno := h.loadLocked(); errno != 0 {
		return nil, errno
	}
	if h.pos >= len(h.ents) {
		return nil, 0
	}
	de := h.ents[h.pos]
	h.pos++
	de.Off = uint64(h.pos)
	return &de, 0
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if errno := h.loadLocked(); errno != 0 {
		return errno
	}
	if off > uint64(len(h.ents)) {
		off = uint64(len(h.ents))
	}
	h.pos = int(off)
	return 0
}

// mergedEntries lists the merged directory n: "." and "..", then the names of
// every layer of its stack top-down, where a higher name masks lower ones and a
// name whose topmost entry is a whiteout is dropped. Markers are never listed.
// The listing is merged once and kept until the directory changes.
func (n *node) mergedEntries() ([]fuse.DirEntry, syscall.Errno) {
	gen := n.dirGen.Load()
	if l := n.list.Load(); l != nil && l.gen == gen {
		return l.ents, 0
	}
	ents, errno := n.mergeEntries()
	if errno == 0 && n.dirGen.Load() == gen {
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
	ents := []fuse.DirEntry{{Name: ".", Mode: unix.S_IFDIR}, {Name: "..", Mode: unix.S_IFDIR}}
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
