package fs

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"slices"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// found is the result of resolving one name through the layers.
type found struct {
	stack    []layerEntry
	isDir    bool
	metacopy bool
	layer    *layer      // layer of the shown (top) entry
	st       unix.Stat_t // stat of the shown entry
	blocks   int64       // st_blocks of the data entry (metacopy)
	// prot has the append-only and immutable flags of the shown entry
	// (cow.ProtFlags): its inode's, and an upper's X(protattr).
	prot uint32
	// origin is X(origin) of an upper entry (copied up from a lower one), and
	// ino the inode number shown instead of the upper's: the origin's.
	origin []byte
	ino    uint64
	// btime is the birth time of an upper entry: it tells a file from an
	// earlier one whose inode number the filesystem reused.
	btime uint64
	// absent has the bits of absentXattrs the shown entry lacks, where
	// absentKnown says its xattr names were listed (see node.xattrs).
	absent      uint64
	absentKnown bool
}

// redirect is an X(redirect) in force while walking down the layers.
type redirect struct {
	abs     string // path from the overlay root, or ""
	name    string // sibling name (relative redirect), or ""
	refused bool   // a redirect the mount does not follow (EPERM below it)
}

// lookupName resolves name in directory n the way the kernel's ovl_lookup does:
// walk the layers top-down; a whiteout ends the walk; a non-directory is the
// answer (a metacopy one goes on for its data); directories join the merge stack
// until an opaque one; a non-directory under a directory ends the stack.
// Redirects are followed where Root.followRedirects says (never with
// userxattr, as the kernel).
func (n *node) lookupName(name string) (*found, syscall.Errno) {
	return n.lookupNameIn(name, nil)
}

// lookupNameIn is lookupName with the layer directories it looks into kept
// open in dirs (nil: each opened and closed per lookup).
func (n *node) lookupNameIn(name string, dirs dirFds) (*found, syscall.Errno) {
	if whiteout.IsMarkerName(name) {
		return nil, syscall.ENOENT
	}
	r := n.root
	base := n.entries()
	var res *found
	var rd redirect
	rooted := false
	var idx *dirIndex
	if len(base) > 1 || (len(base) == 1 && !r.layers[base[0].layer].upper) {
		idx = n.index()
	}
	for i := 0; i < len(base); i++ {
		if rd.refused {
			return nil, syscall.EPERM
		}
		e := base[i]
		l := r.layers[e.layer]
		// Where the layer's names are indexed, skip it without a system
		// call unless it holds the name or its ".wh." marker.
		useIdx := idx != nil && !rooted && rd.name == "" && !l.upper
		marker := !useIdx || idx.mayHold(e.layer, whiteout.MarkerFor(name))
		if useIdx && !marker && !idx.mayHold(e.layer, name) {
			continue
		}
		var dirPath, lname, explicit string
		switch {
		case rd.abs != "":
			dirPath, lname = splitPath(rd.abs)
			explicit = rd.abs
		default:
			p, errno := n.pathOf(e)
			if errno != 0 {
				return nil, errno
			}
			dirPath, lname = p, name
			if rd.name != "" {
				lname = rd.name
				explicit = joinPath(p, lname)
			}
		}
		dfd, kept, err := dirs.open(l, dirPath)
		if err != nil {
			if err == unix.ENOENT || err == unix.ENOTDIR {
				continue // a redirect target missing from this layer
			}
			return nil, toErrno(err)
		}
		stop, errno := n.lookupIn(l, dfd, lname, marker, layerEntry{layer: e.layer, path: explicit}, &res, &rd, dirs != nil)
		if !kept {
			unix.Close(dfd)
		}
		if errno != 0 {
			return nil, errno
		}
		if stop {
			break
		}
		if rd.abs != "" && !rooted {
			// An absolute redirect is looked up in every layer below, whatever
			// the parent's stack (the root's stack holds every layer in order).
			base, i, rooted = r.node.entries(), int(e.layer), true
		}
	}
	if res == nil {
		return nil, syscall.ENOENT
	}
	if res.metacopy && len(res.stack) < 2 {
		return nil, syscall.EIO // metadata without data below it
	}
	if res.origin != nil && !res.isDir {
		n.originIno(name, res)
	}
	return res, 0
}

// originIno shows a copied-up non-directory with the inode number of the lower
// file it was copied from, so that st_ino survives copy-up and remounts, and
// is the same for every name of the copy, as with the kernel overlay. The
// origin's file handle is decoded where the daemon may (root); otherwise the
// lower file at the same path is taken when its handle matches.
func (n *node) originIno(name string, res *found) {
	if ino, ok := n.root.decodeOrigin(res.origin); ok {
		res.ino = ino
		return
	}
	if ino, ok := n.root.parseOrigin(res.origin); ok {
		res.ino = ino
		return
	}
	low, errno := n.lowerLookup(name)
	if errno != 0 || low.isDir {
		return
	}
	l := n.root.layers[low.stack[0].layer]
	dir, lname := splitPath(low.stack[0].path)
	dfd, err := l.openDir(dir)
	if err != nil {
		return
	}
	defer unix.Close(dfd)
	if cow.SameOrigin(res.origin, dfd, lname) {
		res.ino = l.inoBits | low.st.Ino
	}
}

// lookupIn examines lname in the directory dfd of layer l and updates the walk;
// marker says whether a ".wh." marker of it may be there, listing whether the
// lookup serves a READDIRPLUS. It reports whether the walk stops here.
func (n *node) lookupIn(l *layer, dfd int, lname string, marker bool, entry layerEntry, resp **found, rd *redirect, listing bool) (bool, syscall.Errno) {
	ns := n.root.ns
	res := *resp
	var st unix.Stat_t
	if marker && unix.Fstatat(dfd, whiteout.MarkerFor(lname), &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return true, 0 // ".wh.NAME": hidden here and below
	}
	// One statx gives the lower's append-only and immutable flags too,
	// which the merged file shows and obeys (see fileattr.go).
	btime, prot, err := statxProt(dfd, lname, &st)
	if !l.upper {
		btime = 0
	}
	if err != nil {
		if err == unix.ENOENT {
			return false, 0
		}
		return false, toErrno(err)
	}
	if whiteout.IsWhiteoutStat(&st) {
		return true, 0
	}
	typ := st.Mode & unix.S_IFMT
	if !l.upper && typ == unix.S_IFREG && st.Size == 0 && isXattrWhiteout(dfd, lname, ns) {
		return true, 0
	}
	switch {
	case res == nil:
		if err := l.shownAt(dfd, lname, &st); err != nil {
			return true, toErrno(err)
		}
		res = &found{layer: l, st: st, stack: []layerEntry{entry}, btime: btime, prot: prot}
		*resp = res
		if typ == unix.S_IFDIR {
			if l.upper {
				res.origin, _ = getxattrAt(dfd, lname, ns.Key(whiteout.Origin))
			}
			res.isDir = true
			return n.dirLayer(dfd, lname, rd, res)
		}
		// One listxattr of the shown entry says which overlay xattrs it
		// carries and which of absentXattrs it lacks, so that the kernel's
		// GETXATTR of each listed file (ls -l) costs no system call. It
		// replaces the getxattr an upper or a small regular file needs
		// anyway; other files are listed only by the lookups of a stat-ing
		// listing (READDIRPLUS), whose reader may well ask next.
		var names []string
		listed := false
		if listing || l.upper || typ == unix.S_IFREG && mayBeMetacopy(&st) {
			var err error
			if names, listed, err = cow.Listxattrat(dfd, lname); err != nil {
				return true, toErrno(err)
			}
		}
		if listed {
			res.absent, res.absentKnown = absentIn(names), true
		}
		if l.upper && listed && slices.Contains(names, ns.Key(whiteout.Protattr)) {
			v, _ := getxattrAt(dfd, lname, ns.Key(whiteout.Protattr))
			res.prot |= cow.ParseProt(v)
		}
		if l.upper && (!listed || slices.Contains(names, ns.Key(whiteout.Origin))) {
			res.origin, _ = getxattrAt(dfd, lname, ns.Key(whiteout.Origin))
		}
		metacopyKey := ns.Key(whiteout.Metacopy)
		if typ == unix.S_IFREG && mayBeMetacopy(&st) &&
			(listed && slices.Contains(names, metacopyKey) || !listed && hasXattrAt(dfd, lname, metacopyKey)) {
			res.metacopy = true
			return n.fileRedirect(dfd, lname, rd)
		}
		return true, 0
	case res.isDir:
		if typ != unix.S_IFDIR {
			return true, 0 // a non-directory below a directory ends the stack
		}
		res.stack = append(res.stack, entry)
		if res.origin != nil && res.ino == 0 {
			res.ino = l.inoBits | st.Ino // a merged directory shows its origin's number
		}
		return n.dirLayer(dfd, lname, rd, nil)
	default: // a metacopy file looking for its data
		if typ != unix.S_IFREG {
			return true, 0
		}
		if mayBeMetacopy(&st) && hasXattrAt(dfd, lname, ns.Key(whiteout.Metacopy)) {
			return n.fileRedirect(dfd, lname, rd)
		}
		res.stack = append(res.stack[:1], entry)
		res.blocks = st.Blocks
		return true, 0
	}
}

// dirLayer reads the markers of a directory that joined the merge stack: opaque
// ends the stack, a redirect changes where the layers below are searched.
func (n *node) dirLayer(dfd int, lname string, rd *redirect, top *found) (bool, syscall.Errno) {
	cfd, err := unix.Openat(dfd, lname, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return true, toErrno(err)
	}
	defer unix.Close(cfd)
	meta, err := readDirMeta(cfd, n.root.ns)
	if err != nil {
		return true, toErrno(err)
	}
	if top != nil {
		// The shown directory: its xattr names were listed anyway.
		top.absent, top.absentKnown = absentIn(meta.names), true
		if top.layer.upper && slices.Contains(meta.names, n.root.ns.Key(whiteout.Protattr)) {
			v, _ := getxattrAt(cfd, "", n.root.ns.Key(whiteout.Protattr))
			top.prot |= cow.ParseProt(v)
		}
	}
	if meta.opaque {
		return true, 0
	}
	if meta.redirect != nil {
		// Not followed (redirect_dir=nofollow): as the kernel, the lookup
		// fails with EPERM if a layer below would be searched.
		rd.refused = !n.root.followRedirects()
		return false, setRedirect(meta.redirect, rd)
	}
	return false, 0
}

// fileRedirect applies the redirect of a metacopy file (its data was renamed).
func (n *node) fileRedirect(dfd int, lname string, rd *redirect) (bool, syscall.Errno) {
	if !n.root.followRedirects() {
		return false, 0
	}
	v, err := getxattrAt(dfd, lname, n.root.ns.Key(whiteout.Redirect))
	if err != nil {
		return true, toErrno(err)
	}
	if v != nil {
		return false, setRedirect(v, rd)
	}
	return false, 0
}

func setRedirect(v []byte, rd *redirect) syscall.Errno {
	parts, abs, err := whiteout.ParseRedirect(v)
	if err != nil {
		return syscall.EIO // never followed outside the layer
	}
	if abs {
		rd.abs, rd.name = joinAll(parts), ""
	} else if rd.abs != "" {
		dir, _ := splitPath(rd.abs)
		rd.abs = joinPath(dir, parts[0])
	} else {
		rd.name = parts[0]
	}
	return 0
}

func joinAll(parts []string) string {
	s := ""
	for _, p := range parts {
		s = joinPath(s, p)
	}
	return s
}

// dirMeta is what a layer's directory says about itself.
type dirMeta struct {
	names    []string // every xattr name of the directory
	opaque   bool
	xattrWh  bool   // X(opaque)="x": holds xattr whiteouts
	redirect []byte // X(redirect), trusted NS only
}

// readDirMeta reads the opaque markers (every form docs/format.md lists) and the
// redirect of the open directory fd. One listxattr answers the common case of a
// directory without xattrs.
func readDirMeta(fd int, ns whiteout.NS) (dirMeta, error) {
	var m dirMeta
	names, err := cow.Flistxattr(fd)
	if err != nil {
		return m, err
	}
	m.names = names
	opq, rdr := ns.Key(whiteout.Opaque), ns.Key(whiteout.Redirect)
	for _, k := range names {
		switch {
		case k == opq:
			v, err := getxattrAt(fd, "", k)
			if err != nil {
				return m, err
			}
			switch whiteout.ClassifyOpaque(v) {
			case whiteout.IsOpaque:
				m.opaque = true
			case whiteout.HasXattrWhiteouts:
				m.xattrWh = true
			}
		case k == rdr && ns == whiteout.Trusted:
			v, err := getxattrAt(fd, "", k)
			if err != nil {
				return m, err
			}
			m.redirect = v
		case k == whiteout.CompatOpaqueKeys[0] || k == whiteout.CompatOpaqueKeys[1]:
			v, err := getxattrAt(fd, "", k)
			if err != nil {
				return m, err
			}
			if whiteout.ClassifyOpaque(v) == whiteout.IsOpaque {
				m.opaque = true
			}
		}
	}
	if !m.opaque {
		var st unix.Stat_t
		if unix.Fstatat(fd, whiteout.OpaqueMarker, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			m.opaque = true
		}
	}
	return m, nil
}

// isXattrWhiteout reports whether the empty regular file lname of dfd is a
// kernel 6.8+ xattr whiteout: X(whiteout) on it, X(opaque)="x" on its directory.
func isXattrWhiteout(dfd int, lname string, ns whiteout.NS) bool {
	v, err := getxattrAt(dfd, "", ns.Key(whiteout.Opaque))
	if err != nil || whiteout.ClassifyOpaque(v) != whiteout.HasXattrWhiteouts {
		return false
	}
	return hasXattrAt(dfd, lname, ns.Key(whiteout.Whiteout))
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.lookupWith(ctx, name, out, nil)
}

// lookupWith is Lookup with the layer directories kept open in dirs.
func (n *node) lookupWith(ctx context.Context, name string, out *fuse.EntryOut, dirs dirFds) (*gofs.Inode, syscall.Errno) {
	res, errno := n.lookupNameIn(name, dirs)
	if errno != 0 {
		return nil, errno
	}
	return n.newChild(ctx, name, res, out), 0
}

// dirFds holds layer directories open across the lookups of one READDIRPLUS
// request, which all look into the same few: each is resolved (openat2,
// beneath its layer) once per request instead of once per entry.
type dirFds map[dirKey]int

type dirKey struct {
	l    *layer
	path string
}

// maxDirFds bounds the directories one request keeps open.
const maxDirFds = 32

// open opens directory p of layer l, or finds it open; kept says that it
// stays open (the caller must not close it).
func (c dirFds) open(l *layer, p string) (fd int, kept bool, err error) {
	if c != nil {
		if fd, ok := c[dirKey{l, p}]; ok {
			return fd, true, nil
		}
	}
	fd, err = l.openDir(p)
	if err != nil || c == nil || len(c) >= maxDirFds {
		return fd, false, err
	}
	c[dirKey{l, p}] = fd
	return fd, true, nil
}

// closeAll closes every directory held.
func (c dirFds) closeAll() {
	for k, fd := range c {
		unix.Close(fd)
		delete(c, k)
	}
}

// newChild makes (or finds again) the inode of a resolved name and fills out.
func (n *node) newChild(ctx context.Context, name string, res *found, out *fuse.EntryOut) *gofs.Inode {
	child := &node{root: n.root, stack: res.stack, isDir: res.isDir, metacopy: res.metacopy}
	child.prot.Store(res.prot)
	if res.absentKnown {
		// A node nobody else holds yet: what the lookup learnt stands. A
		// node known already forgets instead (xattrsChanged below): its
		// xattrs may have changed through it since this lookup listed them.
		child.xattrs.Store(res.absent)
	}
	ino := res.layer.inoBits | res.st.Ino
	if res.ino != 0 {
		ino = res.ino
	}
	id := gofs.StableAttr{Mode: res.st.Mode & unix.S_IFMT, Ino: ino}
	switch {
	case res.layer.upper && !res.isDir && n.copiedID(res, &id):
		// Another name of a file this mount copied up: the same node.
	case res.layer.upper && res.isDir && res.ino != 0:
		// A copied-up directory keeps the identity it had in the lower layer,
		// so that the nodes below it stay attached to it.
	case res.layer.upper:
		// The upper file itself, whatever its name: copies of several names
		// of one lower inode share their origin's number but are different
		// files, and inode numbers are reused after a delete, where a node of
		// the old file the kernel has not forgotten yet must not be revived.
		id.Gen = fileGen(res.layer.inoBits|res.st.Ino, res.btime)
	case res.isDir:
	case res.st.Nlink > 1:
		// Hard links inside lower layers are separate files in the merged view
		// (a copy-up of one name leaves the others alone, as with the kernel
		// without index): same st_ino, one node per name.
		id.Gen = linkGen(n.StableAttr().Ino, res.stack[0].path, name)
	}
	in := n.NewInode(ctx, child, n.root.renew(id))
	if c := in.Operations().(nodeOps).ovl(); c != child {
		// Known already (the kernel forgot the name, or a hard link): refresh
		// where it lives.
		c.mu.Lock()
		c.stack, c.isDir, c.metacopy = res.stack, res.isDir, res.metacopy
		c.mu.Unlock()
		c.prot.Store(res.prot)
		c.xattrsChanged()
		child = c
	}
	child.fillAttr(res.layer, &res.st, &out.Attr)
	out.Attr.Ino = ino
	if res.metacopy {
		out.Attr.Blocks = uint64(res.blocks)
	}
	return in
}

// linkGen tells apart the names of one lower inode: a hash of the directory's
// inode number and the name.
func linkGen(dirIno uint64, path, name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], dirIno)
	h.Write(b[:])
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return h.Sum64() | 1
}

// fileGen tells apart upper files: a hash of the inode number and the birth
// time, which differ between a file and one that reuses its number.
func fileGen(ino, btime uint64) uint64 {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], ino)
	binary.LittleEndian.PutUint64(b[8:], btime)
	h.Write(b[:])
	return h.Sum64() | 1
}

// copiedID sets id to the identity of the node of an upper file copied up by
// this mount, when res is one of its names.
func (n *node) copiedID(res *found, id *gofs.StableAttr) bool {
	v, ok := n.root.copied.Load(copiedKey{res.layer.inoBits | res.st.Ino, res.btime})
	if ok {
		*id = v.(gofs.StableAttr)
	}
	return ok
}

// copiedKey names an upper file: its inode number and birth time.
type copiedKey struct{ ino, btime uint64 }

// statxAt stats name of dfd like fstatat and also returns its birth time (0
// where the filesystem does not keep one).
// name "" stats dfd itself.
func statxAt(dfd int, name string, st *unix.Stat_t) (uint64, error) {
	btime, _, err := statxProt(dfd, name, st)
	return btime, err
}

// statxProt is statxAt that also returns the append-only and immutable
// flags of the inode (as cow.ProtFlags), which statx reports for free.
func statxProt(dfd int, name string, st *unix.Stat_t) (btime uint64, prot uint32, err error) {
	var sx unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if err := unix.Statx(dfd, name, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx); err != nil {
		return 0, 0, err
	}
	if sx.Attributes_mask&sx.Attributes&unix.STATX_ATTR_APPEND != 0 {
		prot |= cow.FlagAppend
	}
	if sx.Attributes_mask&sx.Attributes&unix.STATX_ATTR_IMMUTABLE != 0 {
		prot |= cow.FlagImmutable
	}
	*st = unix.Stat_t{
		Dev:     unix.Mkdev(sx.Dev_major, sx.Dev_minor),
		Ino:     sx.Ino,
		Nlink:   uint64(sx.Nlink),
		Mode:    uint32(sx.Mode),
		Uid:     sx.Uid,
		Gid:     sx.Gid,
		Rdev:    unix.Mkdev(sx.Rdev_major, sx.Rdev_minor),
		Size:    int64(sx.Size),
		Blksize: int64(sx.Blksize),
		Blocks:  int64(sx.Blocks),
		Atim:    unix.Timespec{Sec: sx.Atime.Sec, Nsec: int64(sx.Atime.Nsec)},
		Mtim:    unix.Timespec{Sec: sx.Mtime.Sec, Nsec: int64(sx.Mtime.Nsec)},
		Ctim:    unix.Timespec{Sec: sx.Ctime.Sec, Nsec: int64(sx.Ctime.Nsec)},
	}
	if sx.Mask&unix.STATX_BTIME == 0 {
		return 0, prot, nil
	}
	return uint64(sx.Btime.Sec)*1e9 + uint64(sx.Btime.Nsec), prot, nil
}

// decodeOrigin finds the inode number of the lower file that the X(origin)
// value v names, by opening its file handle on the lower layers' filesystems.
func (r *Root) decodeOrigin(v []byte) (uint64, bool) {
	if r.noHandles.Load() {
		return 0, false
	}
	fh, ok := cow.OriginHandle(v)
	if !ok {
		return 0, false
	}
	tried := map[uint64]bool{}
	for _, l := range r.layers {
		if l.upper || tried[l.dev] {
			continue
		}
		tried[l.dev] = true
		fd, err := unix.OpenByHandleAt(l.fd, fh, unix.O_PATH|unix.O_CLOEXEC)
		if err == unix.EPERM {
			r.noHandles.Store(true) // not privileged: never again
			return 0, false
		}
		if err != nil {
			continue
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		unix.Close(fd)
		if err == nil && st.Dev == l.dev {
			return l.inoBits | st.Ino, true
		}
	}
	return 0, false
}

// Filesystems whose file handles start with the inode number (FILEID_INO32_GEN
// and FILEID_INO64_GEN): ext2/3/4 and XFS.
const (
	ext4Magic = 0xEF53
	xfsMagic  = 0x58465342
)

// parseOrigin reads the inode number out of the X(origin) handle where the
// daemon may not open handles (rootless) and the lower layer's filesystem
// puts the inode number first in its handles.
func (r *Root) parseOrigin(v []byte) (uint64, bool) {
	fh, ok := cow.OriginHandle(v)
	if !ok {
		return 0, false
	}
	b := fh.Bytes()
	var ino uint64
	switch {
	case fh.Type() == 1 && len(b) >= 8: // FILEID_INO32_GEN: u32 ino, u32 gen
		ino = uint64(binary.NativeEndian.Uint32(b))
	case fh.Type() == 0x81 && len(b) >= 12: // FILEID_INO64_GEN: u64 ino, u32 gen
		ino = binary.NativeEndian.Uint64(b)
	default:
		return 0, false
	}
	for _, l := range r.layers {
		if !l.upper && (l.fsType == ext4Magic || l.fsType == xfsMagic) {
			return l.inoBits | ino, true
		}
	}
	return 0, false
}

// mayBeMetacopy reports whether a regular file can be a metacopy file that
// matters. Those hold no data of their own: their st_blocks count only the
// block or two that hold their xattrs. So a file with more blocks needs no
// xattr read, and neither does an empty one (it shows the same either way).
func mayBeMetacopy(st *unix.Stat_t) bool {
	return st.Size > 0 && st.Blocks*512 <= 8192
}
