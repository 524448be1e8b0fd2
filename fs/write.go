package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

var (
	_ = (gofs.NodeCreater)((*node)(nil))
	_ = (gofs.NodeMkdirer)((*node)(nil))
	_ = (gofs.NodeMknoder)((*node)(nil))
	_ = (gofs.NodeSymlinker)((*node)(nil))
	_ = (gofs.NodeLinker)((*node)(nil))
	_ = (gofs.NodeUnlinker)((*node)(nil))
	_ = (gofs.NodeRmdirer)((*node)(nil))
	_ = (gofs.NodeRenamer)((*node)(nil))
	_ = (gofs.NodeSetattrer)((*node)(nil))
	_ = (gofs.NodeSetxattrer)((*node)(nil))
	_ = (gofs.NodeRemovexattrer)((*node)(nil))
)

// caller returns who makes a request, as on-disk IDs.
func (n *node) caller(ctx context.Context) (uid, gid uint32) {
	uid, gid = uint32(unix.Geteuid()), uint32(unix.Getegid())
	if c, ok := ctx.(*fuse.Context); ok {
		uid, gid = c.Uid, c.Gid
	}
	return n.root.ids.disk(uid, gid)
}

// upperWhiteoutAt reports whether the upper directory dfd has a whiteout at name.
func upperWhiteoutAt(dfd int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && whiteout.IsWhiteoutStat(&st)
}

// lowerProvides reports whether a lower layer shows something at name in n:
// then deleting name needs a whiteout, and a directory made there must be opaque.
func (n *node) lowerProvides(name string) bool {
	_, errno := n.lowerLookup(name)
	return errno != syscall.ENOENT // when in doubt, a whiteout too many is harmless
}

// lowerLookup resolves name in n's lower layers only, as if n had no upper
// directory. Every entry of the result carries its explicit layer path.
func (n *node) lowerLookup(name string) (*found, syscall.Errno) {
	var lowers []layerEntry
	for _, e := range n.entries() {
		if e.layer != 0 || n.root.upper == nil {
			lowers = append(lowers, e)
		}
	}
	if len(lowers) == 0 {
		return nil, syscall.ENOENT
	}
	probe := &node{root: n.root, stack: lowers, isDir: true}
	for i, e := range lowers {
		p, errno := n.pathOf(e)
		if errno != 0 {
			return nil, errno
		}
		if p == "" {
			p = "."
		}
		probe.stack[i].path = p
	}
	res, errno := probe.lookupName(name)
	if errno != 0 {
		return nil, errno
	}
	for i, e := range res.stack {
		if e.path == "" {
			pe, _ := probe.entryIn(e.layer)
			res.stack[i].path = joinPath(pe.path, name)
		}
	}
	return res, 0
}

// create makes a new object name in n: build makes it as tmp in the scratch dir,
// it gets the caller as owner (the directory's group when it is setgid), and is
// renamed into place, over a whiteout if there is one.
func (n *node) create(ctx context.Context, name string, mode uint32, build buildFunc, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := n.refuseCreate(); errno != 0 {
		return nil, errno
	}
	if errno := n.place(ctx, name, mode, true, build); errno != 0 {
		return nil, errno
	}
	res, errno := n.lookupName(name)
	if errno != 0 {
		return nil, errno
	}
	return n.newChild(ctx, name, res, out), 0
}

// buildFunc makes a new object tmp in directory dir, its permission bits cut
// by umask.
type buildFunc func(dir int, tmp string, umask uint32) error

// place builds a new object and puts it at name in n's upper directory; own
// gives it to the caller.
func (n *node) place(ctx context.Context, name string, mode uint32, own bool, build buildFunc) syscall.Errno {
	if whiteout.IsMarkerName(name) {
		return syscall.EINVAL // the overlay format cannot hold these names
	}
	dfd, errno := n.upperDir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	r := n.root
	sc := r.scratch
	bdir := sc.Fd()
	umask := uint32(0)
	if acl, _ := getxattrAt(dfd, "", aclDefault); len(acl) == 0 {
		umask = r.callerUmask(ctx)
	} else if own {
		// Build inside a scratch dir that has the parent's default ACL, so that
		// the filesystem gives the new object the ACL it inherits in place.
		sub, done, err := sc.Subdir()
		if err != nil {
			return toErrno(err)
		}
		defer done()
		if err := unix.Fsetxattr(sub, aclDefault, acl, 0); err != nil {
			return toErrno(err)
		}
		bdir = sub
	}
	tmp := sc.TempName()
	if err := build(bdir, tmp, umask); err != nil {
		sc.Discard(bdir, tmp)
		return toErrno(err)
	}
	isDir := mode&unix.S_IFMT == unix.S_IFDIR
	overWh := upperWhiteoutAt(dfd, name)
	if isDir && (overWh || n.hasLower()) {
		// A directory made where a lower one may be hidden must not merge
		// it: the kernel marks it opaque too (checked: also where nothing
		// is below, as it does not look).
		if err := unix.Lsetxattr(cow.ProcPath(bdir, tmp), r.ns.Key(whiteout.Opaque), []byte("y"), 0); err != nil {
			sc.Discard(bdir, tmp)
			return toErrno(err)
		}
	}
	if !overWh && r.upper.fsType == unix.EXT4_SUPER_MAGIC && (isDir || mode&unix.S_IFMT == unix.S_IFREG) {
		cow.InheritFlags(dfd, bdir, tmp, isDir)
	}
	if own {
		if errno := n.setOwner(ctx, dfd, bdir, tmp); errno != 0 {
			sc.Discard(bdir, tmp)
			return errno
		}
	}
	err := sc.Place(bdir, tmp, dfd, name, overWh, isDir)
	n.changed()
	return toErrno(err)
}

// aclDefault is the xattr of a directory's default POSIX ACL.
const aclDefault = "system.posix_acl_default"

// newUmask is the umask of an object made right in the upper directory dfd:
// the caller's, unless dfd has a default ACL, which replaces it (the
// filesystem applies the ACL itself).
func (n *node) newUmask(ctx context.Context, dfd int) uint32 {
	if acl, _ := getxattrAt(dfd, "", aclDefault); len(acl) == 0 {
		return n.root.callerUmask(ctx)
	}
	return 0
}

// setOwner gives tmp (in directory sfd; "": sfd itself) the caller's uid and
// gid (the directory dfd's gid when it is setgid), keeping the mode bits that
// chown clears.
func (n *node) setOwner(ctx context.Context, dfd, sfd int, tmp string) syscall.Errno {
	uid, gid := n.caller(ctx)
	up := n.root.upper
	var dst unix.Stat_t
	if err := unix.Fstat(dfd, &dst); err != nil {
		return toErrno(err)
	}
	if err := up.shownAt(dfd, "", &dst); err != nil {
		return toErrno(err)
	}
	if dst.Mode&unix.S_ISGID != 0 {
		gid = dst.Gid
	}
	atFlags := unix.AT_SYMLINK_NOFOLLOW
	if tmp == "" {
		atFlags |= unix.AT_EMPTY_PATH
	}
	var st unix.Stat_t
	if err := unix.Fstatat(sfd, tmp, &st, atFlags); err != nil {
		return toErrno(err)
	}
	if up.override != "" && whiteout.OverrideFits(st.Mode) {
		// The mode as built (umask or default ACL applied) is the one shown.
		o := whiteout.OverrideStat{Uid: uid, Gid: gid, Mode: st.Mode & 0o7777}
		return toErrno(cow.SetOverride(sfd, tmp, up.override, o, st.Mode&unix.S_IFMT))
	}
	if st.Uid == uid && st.Gid == gid {
		return 0
	}
	if err := unix.Fchownat(sfd, tmp, int(uid), int(gid), atFlags); err != nil {
		return toErrno(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		if tmp == "" {
			return toErrno(unix.Fchmod(sfd, st.Mode&0o7777))
		}
		return toErrno(unix.Fchmodat(sfd, tmp, st.Mode&0o7777, 0))
	}
	return 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, name, unix.S_IFDIR|mode, func(sfd int, tmp string, umask uint32) error {
		if err := unix.Mkdirat(sfd, tmp, mode&0o7777&^umask); err != nil {
			return err
		}
		if !n.setgidDir() {
			return nil
		}
		// A setgid parent passes its bit on; the scratch dir is not setgid.
		// Only that bit is added: the group bits may be an inherited ACL's mask.
		var st unix.Stat_t
		if err := unix.Fstatat(sfd, tmp, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		return unix.Fchmodat(sfd, tmp, st.Mode&0o7777|unix.S_ISGID, 0)
	}, out)
}

// setgidDir reports whether n has the setgid bit.
func (n *node) setgidDir() bool {
	l, p, errno := n.top()
	var st unix.Stat_t
	return errno == 0 && l.lstatShown(p, &st) == nil && st.Mode&unix.S_ISGID != 0
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if mode&unix.S_IFMT == unix.S_IFCHR && dev == 0 {
		// A 0/0 character device is a whiteout on disk: the kernel overlay
		// refuses to make one, before anything is copied up.
		return nil, syscall.EPERM
	}
	return n.create(ctx, name, mode, func(sfd int, tmp string, umask uint32) error {
		return unix.Mknodat(sfd, tmp, mode&^(umask&0o777), int(dev))
	}, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, name, unix.S_IFLNK, func(sfd int, tmp string, _ uint32) error {
		return unix.Symlinkat(target, sfd, tmp)
	}, out)
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if errno := n.refuseCreate(); errno != 0 {
		return nil, nil, 0, errno
	}
	if fd, res, errno, ok := n.createInPlace(ctx, name, flags, mode); ok {
		if errno != 0 {
			return nil, nil, 0, errno
		}
		in := n.newChild(ctx, name, res, out)
		h := in.Operations().(nodeOps).ovl().newHandle(fd, flags, false, n.root.newFilePT(flags))
		h.created = true
		return in, h, 0, 0
	}
	fd := -1
	in, errno := n.create(ctx, name, unix.S_IFREG|mode, func(sfd int, tmp string, umask uint32) error {
		var err error
		fl := int(flags) &^ (unix.O_TRUNC | unix.O_EXCL | unix.O_CREAT | unix.O_NOFOLLOW)
		fd, err = unix.Openat(sfd, tmp, fl|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, mode&0o7777&^umask)
		return err
	}, out)
	if errno != 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, nil, 0, errno
	}
	c := in.Operations().(nodeOps).ovl()
	h := c.newHandle(fd, flags, false, n.root.newFilePT(flags))
	h.created = true
	return in, h, 0, 0
}

// newFilePT says whether the open of a file just made with open(2) flags
// may be served by passthrough (see openData: a new file is empty).
func (r *Root) newFilePT(flags uint32) bool {
	return r.passthrough.Load() && r.upper.passthrough && flags&unix.O_ACCMODE != unix.O_RDONLY
}

// createInPlace makes a new regular file at name the way the kernel overlay
// does where nothing is in the way: in n's upper directory itself, so that
// the filesystem puts its inode there (building every file in the scratch dir
// crowds one ext4 block group: most of the time of an untar went to inode
// allocation) and gives it the directory's default ACL and setgid group. It
// is an O_TMPFILE that gets its owner before linkat gives it its name, so no
// half-made file is ever seen. ok is false, with nothing done, where the
// scratch path must make it: a whiteout at name, an upper filesystem without
// O_TMPFILE, or linkat refused (AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH).
func (n *node) createInPlace(ctx context.Context, name string, flags, mode uint32) (fd int, res *found, errno syscall.Errno, ok bool) {
	r := n.root
	if r.noTmpfileLink.Load() || whiteout.IsMarkerName(name) {
		return -1, nil, 0, false
	}
	dfd, errno := n.upperDir()
	if errno != 0 {
		return -1, nil, errno, true
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	switch err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && whiteout.IsWhiteoutStat(&st):
		return -1, nil, 0, false
	case err == nil:
		return -1, nil, syscall.EEXIST, true
	case err != unix.ENOENT:
		return -1, nil, toErrno(err), true
	}
	// O_TMPFILE needs write access; the kernel keeps the client to its own
	// access mode.
	fl := int(flags) &^ (unix.O_ACCMODE | unix.O_TRUNC | unix.O_EXCL | unix.O_CREAT | unix.O_NOFOLLOW)
	fd, err := unix.Openat(dfd, ".", fl|unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, mode&0o7777&^n.newUmask(ctx, dfd))
	if err != nil {
		if err == unix.EOPNOTSUPP || err == unix.EISDIR || err == unix.EINVAL {
			return -1, nil, 0, false
		}
		return -1, nil, toErrno(err), true
	}
	fail := func(errno syscall.Errno) (int, *found, syscall.Errno, bool) {
		unix.Close(fd)
		return -1, nil, errno, true
	}
	if errno := n.setOwner(ctx, dfd, fd, ""); errno != 0 {
		return fail(errno)
	}
	if err := unix.Linkat(fd, "", dfd, name, unix.AT_EMPTY_PATH); err != nil {
		var dst unix.Stat_t
		if err == unix.EPERM || err == unix.ENOENT && unix.Fstat(dfd, &dst) == nil && dst.Nlink > 0 {
			r.noTmpfileLink.Store(true) // not allowed here: the scratch path from now on
			unix.Close(fd)
			return -1, nil, 0, false
		}
		return fail(toErrno(err))
	}
	n.changed()
	res = &found{stack: []layerEntry{{layer: 0}}, layer: r.upper}
	if res.btime, err = statxAt(fd, "", &res.st); err != nil {
		return fail(toErrno(err))
	}
	if err := r.upper.shownAt(fd, "", &res.st); err != nil {
		return fail(toErrno(err))
	}
	return fd, res, 0, true
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t := target.(nodeOps).ovl()
	if errno := t.refuseChange(); errno != 0 {
		return nil, errno
	}
	if errno := n.refuseCreate(); errno != 0 {
		return nil, errno
	}
	if fd, ok := t.tmpfileFd(); ok {
		return n.linkTmpfile(ctx, t, fd, name, out)
	}
	if errno := t.copyUp(false); errno != 0 {
		return nil, errno
	}
	tp, errno := t.pathOf(layerEntry{layer: 0})
	if errno != 0 {
		return nil, errno
	}
	tdir, tname := splitPath(tp)
	tfd, err := n.root.upper.openDir(tdir)
	if err != nil {
		return nil, toErrno(err)
	}
	defer unix.Close(tfd)
	errno = n.place(ctx, name, 0, false, func(sfd int, tmp string, _ uint32) error {
		return unix.Linkat(tfd, tname, sfd, tmp, 0)
	})
	if errno != 0 {
		return nil, errno
	}
	// Both names are one inode: answer with the node the kernel already knows.
	if errno := t.stat(&out.Attr); errno != 0 {
		return nil, errno
	}
	return t.EmbeddedInode(), 0
}

// childForChange resolves name in n for a change (unlink, rmdir, rename): fresh
// from the layers, not from the kernel's cache.
func (n *node) childForChange(name string) (*found, syscall.Errno) {
	if whiteout.IsMarkerName(name) {
		return nil, syscall.ENOENT
	}
	return n.lookupName(name)
}

// remove deletes name (a resolved child res) from the merged view: the upper
// entry goes, and a whiteout stays where a lower layer still provides the name.
func (n *node) remove(name string, res *found) syscall.Errno {
	dfd, errno := n.upperDir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	sc := n.root.scratch
	inUpper := res.layer.upper
	// A lower layer provides the name when the entry comes from one or merges
	// one; otherwise (an upper file, or an opaque directory) it must be asked.
	needWh := !inUpper || len(res.stack) > 1 || n.lowerProvides(name)
	var err error
	switch {
	case !inUpper:
		// Nothing is at name in the upper dir: a whiteout made in place is
		// as atomic as one renamed in.
		err = sc.NewWhiteout(dfd, name)
	case res.isDir && needWh:
		err = sc.ReplaceDirWithWhiteout(dfd, name)
	case res.isDir:
		err = sc.RemoveDir(dfd, name)
	case needWh:
		err = sc.Whiteout(dfd, name)
	default:
		err = unix.Unlinkat(dfd, name, 0)
	}
	n.changed()
	return toErrno(err)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if res := n.heldFile(name); res != nil {
		// The kernel looked the name up just before: its node says where the
		// file is, which spares a walk through the layers per delete (most of
		// an rm -rf). Where the layers disagree, the walk decides.
		if errno := n.refuseRemove(res); errno != 0 {
			return errno
		}
		if errno := n.remove(name, res); errno != syscall.ENOENT && errno != syscall.EEXIST {
			return errno
		}
	}
	res, errno := n.childForChange(name)
	if errno != 0 {
		return errno
	}
	if res.isDir {
		return syscall.EISDIR
	}
	if errno := n.refuseRemove(res); errno != 0 {
		return errno
	}
	return n.remove(name, res)
}

// heldFile describes the child name of n as its node knows it, where that node
// is a plain (not metacopy) non-directory in one layer; else nil.
func (n *node) heldFile(name string) *found {
	cn := n.child(name)
	if cn == nil || whiteout.IsMarkerName(name) {
		return nil
	}
	cn.mu.Lock()
	stack, isDir, mc := cn.stack, cn.isDir, cn.metacopy
	cn.mu.Unlock()
	if isDir || mc || len(stack) != 1 {
		return nil
	}
	return &found{stack: stack, layer: n.root.layers[stack[0].layer], prot: cn.prot.Load()}
}

// detached makes a node for a resolved child that is not in the go-fuse tree:
// every entry carries its explicit layer path.
func (n *node) detached(name string, res *found) (*node, syscall.Errno) {
	c := &node{root: n.root, isDir: res.isDir, metacopy: res.metacopy}
	c.stack = make([]layerEntry, len(res.stack))
	for i, e := range res.stack {
		if e.path == "" {
			pe, ok := n.entryIn(e.layer)
			if !ok {
				return nil, syscall.EIO
			}
			pp, errno := n.pathOf(pe)
			if errno != 0 {
				return nil, errno
			}
			e.path = joinPath(pp, name)
		}
		c.stack[i] = e
	}
	return c, 0
}

// isEmptyDir reports whether the merged directory res (name in n) shows nothing.
func (n *node) isEmptyDir(name string, res *found) (bool, syscall.Errno) {
	c, errno := n.detached(name, res)
	if errno != 0 {
		return false, errno
	}
	ents, _, errno := c.mergedEntries()
	return len(ents) <= 2, errno
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	res, errno := n.childForChange(name)
	if errno != 0 {
		return errno
	}
	if !res.isDir {
		return syscall.ENOTDIR
	}
	if errno := n.refuseRemove(res); errno != 0 {
		return errno
	}
	if empty, errno := n.isEmptyDir(name, res); errno != 0 {
		return errno
	} else if !empty {
		return syscall.ENOTEMPTY
	}
	n.root.pinGoneDir(n.child(name))
	return n.remove(name, res)
}

// maxRedirect is the longest redirect the kernel writes.
const maxRedirect = 256

// hasAbsRedirect says whether n's upper entry (f, as found) holds an absolute
// X(redirect), which a move keeps.
func (n *node) hasAbsRedirect(f *found) bool {
	if f.stack[0].layer != 0 {
		return false
	}
	l, p, errno := n.top()
	if errno != 0 {
		return false
	}
	dir, name := splitPath(p)
	dfd, err := l.openDir(dir)
	if err != nil {
		return false
	}
	defer unix.Close(dfd)
	cur, _ := getxattrAt(dfd, name, n.root.ns.Key(whiteout.Redirect))
	return len(cur) > 0 && cur[0] == '/'
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np := newParent.(nodeOps).ovl()
	defer n.changed()
	defer np.changed()
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	if whiteout.IsMarkerName(newName) {
		return syscall.EINVAL
	}
	src, errno := n.childForChange(name)
	if errno != 0 {
		return errno
	}
	dst, derr := np.childForChange(newName)
	if derr != 0 && derr != syscall.ENOENT {
		return derr
	}
	if flags&unix.RENAME_NOREPLACE != 0 && dst != nil {
		return syscall.EEXIST
	}
	if errno := n.refuseRemove(src); errno != 0 {
		return errno
	}
	if errno := np.refuseCreate(); errno != 0 {
		return errno
	}
	if dst != nil {
		if errno := np.refuseRemove(dst); errno != 0 {
			return errno
		}
	}
	srcNode, errno := n.childNode(ctx, name, src)
	if errno != 0 {
		return errno
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		if dst == nil {
			return syscall.ENOENT
		}
		return n.exchange(ctx, name, srcNode, np, newName, dst)
	}
	if dst != nil {
		switch {
		case src.isDir && !dst.isDir:
			return syscall.ENOTDIR
		case !src.isDir && dst.isDir:
			return syscall.EISDIR
		case dst.isDir:
			if empty, errno := np.isEmptyDir(newName, dst); errno != 0 {
				return errno
			} else if !empty {
				return syscall.ENOTEMPTY
			}
		}
	}
	srcLower := src.isDir && srcNode.hasLower()
	if srcLower && !n.root.writesRedirects() {
		return syscall.EXDEV // no redirects (userxattr, redirect_dir=off...): mv copies
	}
	// Where the moved directory merges lower layers, say where they are.
	var redirectTo string
	if srcLower {
		lp, errno := srcNode.lowerPath()
		if errno != 0 {
			return errno
		}
		redirectTo = "/" + lp
		// As the kernel: a move elsewhere writes the absolute path, unless
		// one is there already; the kernel's limit on it is ours.
		if len(redirectTo) > maxRedirect && n != np && !srcNode.hasAbsRedirect(src) {
			return syscall.EXDEV
		}
	}
	// An entry copied up (it has an origin) or a redirected directory
	// makes its new parent impure, as with the kernel.
	nonPure := src.origin != nil || srcNode.hasLower()
	if errno := srcNode.copyUp(false); errno != 0 {
		return errno
	}
	sfd, dfd, errno := upperDirs(n, np)
	if errno != 0 {
		return errno
	}
	defer unix.Close(sfd)
	defer unix.Close(dfd)
	if nonPure {
		if errno := n.root.setImpure(dfd); errno != 0 {
			return errno
		}
	}
	ns := n.root.ns
	sp := cow.ProcPath(sfd, name)
	if srcLower {
		// As the kernel: a rename within one directory writes the old name
		// (relative), a move elsewhere the lower path (absolute); a
		// redirect already there stays where it still holds.
		cur, _ := getxattrAt(sfd, name, ns.Key(whiteout.Redirect))
		switch {
		case cur != nil && (n == np || cur[0] == '/'):
		case n == np:
			if err := unix.Lsetxattr(sp, ns.Key(whiteout.Redirect), []byte(name), 0); err != nil {
				return toErrno(err)
			}
		default:
			if err := unix.Lsetxattr(sp, ns.Key(whiteout.Redirect), []byte(redirectTo), 0); err != nil {
				return toErrno(err)
			}
		}
		if err := srcNode.pinLowerPaths(); err != 0 {
			return err
		}
	} else if src.isDir && (dst != nil || upperWhiteoutAt(dfd, newName)) && np.lowerProvides(newName) {
		// An upper-only directory moved over a lower one must not merge it.
		if err := unix.Lsetxattr(sp, ns.Key(whiteout.Opaque), []byte("y"), 0); err != nil {
			return toErrno(err)
		}
	}
	if dst != nil && dst.isDir {
		n.root.pinGoneDir(np.child(newName))
	}
	if dst != nil && dst.isDir && dst.stack[0].layer == 0 {
		// The target shows nothing, but its upper dir may hold whiteouts.
		if errno := clearUpperDir(dfd, newName); errno != 0 {
			return errno
		}
	}
	if src.isDir && upperWhiteoutAt(dfd, newName) {
		// rename(2) cannot put a directory over a device.
		if err := unix.Unlinkat(dfd, newName, 0); err != nil {
			return toErrno(err)
		}
	}
	needWh := n.lowerProvides(name)
	if needWh {
		err := unix.Renameat2(sfd, name, dfd, newName, unix.RENAME_WHITEOUT)
		if err == nil {
			return 0
		}
		if err != unix.EINVAL && err != unix.EPERM {
			return toErrno(err)
		}
	}
	if err := unix.Renameat(sfd, name, dfd, newName); err != nil {
		return toErrno(err)
	}
	if needWh {
		return toErrno(n.root.scratch.Whiteout(sfd, name))
	}
	return 0
}

// exchange swaps two names (RENAME_EXCHANGE). Both stay visible, so no whiteouts
// are needed; directories that merge lower layers would need redirects on both
// sides, which the kernel refuses too.
func (n *node) exchange(ctx context.Context, name string, srcNode *node, np *node, newName string, dst *found) syscall.Errno {
	dstNode, errno := np.childNode(ctx, newName, dst)
	if errno != 0 {
		return errno
	}
	if (srcNode.isDir && srcNode.hasLower()) || (dstNode.isDir && dstNode.hasLower()) {
		return syscall.EXDEV
	}
	if errno := srcNode.copyUp(false); errno != 0 {
		return errno
	}
	if errno := dstNode.copyUp(false); errno != 0 {
		return errno
	}
	sfd, dfd, errno := upperDirs(n, np)
	if errno != 0 {
		return errno
	}
	defer unix.Close(sfd)
	defer unix.Close(dfd)
	return toErrno(unix.Renameat2(sfd, name, dfd, newName, unix.RENAME_EXCHANGE))
}

// upperDirs opens the upper directories of a rename's source and target
// directories, copying them up first.
func upperDirs(src, dst *node) (sfd, dfd int, errno syscall.Errno) {
	if sfd, errno = src.upperDir(); errno != 0 {
		return -1, -1, errno
	}
	if dfd, errno = dst.upperDir(); errno != 0 {
		unix.Close(sfd)
		return -1, -1, errno
	}
	return sfd, dfd, 0
}

// child returns the node of child name if the kernel knows it.
func (n *node) child(name string) *node {
	if c := n.GetChild(name); c != nil {
		return c.Operations().(nodeOps).ovl()
	}
	return nil
}

// childNode returns the node of child name (resolved as res), from the go-fuse
// tree when the kernel knows it, so that copy-up updates the node it uses.
func (n *node) childNode(ctx context.Context, name string, res *found) (*node, syscall.Errno) {
	if c := n.child(name); c != nil {
		return c, 0
	}
	var out fuse.EntryOut
	in := n.newChild(ctx, name, res, &out)
	n.AddChild(name, in, true)
	return in.Operations().(nodeOps).ovl(), 0
}

// lowerPath is the path of n's topmost lower entry, for a redirect.
func (n *node) lowerPath() (string, syscall.Errno) {
	for _, e := range n.entries() {
		if e.layer != 0 {
			return n.pathOf(e)
		}
	}
	return "", syscall.EIO
}

// pinLowerPaths gives every lower entry of n its explicit path, before n moves
// in the tree: the lower layers still hold it under its old path.
func (n *node) pinLowerPaths() syscall.Errno {
	old := n.entries()
	pinned := make([]layerEntry, len(old))
	for i, e := range old {
		if e.layer != 0 && e.path == "" {
			p, errno := n.pathOf(e)
			if errno != 0 {
				return errno
			}
			e.path = p
		}
		pinned[i] = e
	}
	n.mu.Lock()
	n.stack = pinned
	n.mu.Unlock()
	return 0
}

// clearUpperDir empties the upper directory name of dfd (it holds only
// whiteouts when the merged directory is empty).
func clearUpperDir(dfd int, name string) syscall.Errno {
	cfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(cfd)
	return toErrno(cow.RemoveAllIn(cfd))
}

// upperEntry opens n's directory in the upper layer after copying n up, and
// returns it with n's name there.
func (n *node) upperEntry(noData bool) (int, string, syscall.Errno) {
	if errno := n.copyUp(noData); errno != 0 {
		return -1, "", errno
	}
	p, errno := n.pathOf(layerEntry{layer: 0})
	if errno != 0 {
		return -1, "", errno
	}
	if p == "" {
		fd, err := unix.Dup(n.root.upper.fd)
		return fd, "", toErrno(err)
	}
	dir, name := splitPath(p)
	fd, err := n.root.upper.openDir(dir)
	return fd, name, toErrno(err)
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := n.refuseSetattr(in); errno != 0 {
		return errno
	}
	size, hasSize := in.GetSize()
	fh, _ := f.(*fileHandle)
	if hasSize && fh == nil && n.lowerBacked() {
		// truncate(2) while the kernel reads the lower file by passthrough
		// (the caller holds n's open lock for a size change: rawFS.SetAttr).
		return n.retire(size == 0)
	}
	// Truncating a lower file to 0 needs none of its data.
	dfd, name, errno := n.upperEntry(hasSize && size == 0)
	target := name
	atFlags := unix.AT_SYMLINK_NOFOLLOW
	xfd, xname := dfd, name // the entry, for the override xattr
	switch {
	case errno == syscall.ESTALE && fh != nil:
		// Unlinked while open: change the file through its descriptor.
		dfd, target, atFlags = unix.AT_FDCWD, fh.procPath(), 0
		xfd, xname = fh.fd, ""
	case errno != 0:
		return errno
	default:
		defer unix.Close(dfd)
		if name == "" {
			target, atFlags = ".", 0
		}
	}
	vuid, uok := in.GetUID()
	vgid, gok := in.GetGID()
	mode, mok := in.GetMode()
	if (uok || gok || mok) && n.root.upper.override != "" {
		done, errno := n.setattrOverride(xfd, xname, in)
		if errno != 0 {
			return errno
		}
		if done {
			uok, gok, mok = false, false, false
		}
	}
	if uok || gok {
		duid, dgid := n.root.ids.disk(vuid, vgid)
		uid, gid := int(duid), int(dgid)
		if !uok {
			uid = -1
		}
		if !gok {
			gid = -1
		}
		if err := unix.Fchownat(dfd, target, uid, gid, atFlags); err != nil && !n.root.ids.squashed() {
			return toErrno(err)
		}
	}
	if mok {
		if err := unix.Fchmodat(dfd, target, mode&0o7777, 0); err != nil {
			return toErrno(err)
		}
	}
	if hasSize {
		if fh != nil && fh.writable {
			if err := unix.Ftruncate(fh.fd, int64(size)); err != nil {
				return toErrno(err)
			}
		} else {
			fd, err := unix.Openat(dfd, target, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return toErrno(err)
			}
			err = unix.Ftruncate(fd, int64(size))
			unix.Close(fd)
			if err != nil {
				return toErrno(err)
			}
		}
	}
	atime, aok := in.GetATime()
	mtime, mok := in.GetMTime()
	if aok || mok || in.Valid&(fuse.FATTR_ATIME_NOW|fuse.FATTR_MTIME_NOW) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
		} else if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
		} else if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		if err := unix.UtimesNanoAt(dfd, target, ts, atFlags); err != nil {
			return toErrno(err)
		}
	}
	return n.Getattr(ctx, f, out)
}

// setattrOverride applies the owner and mode changes of in to entry name of
// the upper directory dfd ("": dfd itself) in the upper layer's override
// xattr. It reports false, changing nothing, for a file that cannot carry it
// (user.* on a symlink or a device): that one is changed for real.
func (n *node) setattrOverride(dfd int, name string, in *fuse.SetAttrIn) (bool, syscall.Errno) {
	up := n.root.upper
	var st unix.Stat_t
	var err error
	if name == "" {
		err = unix.Fstat(dfd, &st)
	} else {
		err = unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return false, toErrno(err)
	}
	if !whiteout.OverrideFits(st.Mode) {
		return false, 0
	}
	if err := up.shownAt(dfd, name, &st); err != nil {
		return false, toErrno(err)
	}
	o := whiteout.OverrideStat{Uid: st.Uid, Gid: st.Gid, Mode: st.Mode & 0o7777}
	vuid, uok := in.GetUID()
	vgid, gok := in.GetGID()
	duid, dgid := n.root.ids.disk(vuid, vgid)
	if uok {
		o.Uid = duid
	}
	if gok {
		o.Gid = dgid
	}
	if mode, ok := in.GetMode(); ok {
		o.Mode = mode & 0o7777
	}
	return true, toErrno(cow.SetOverride(dfd, name, up.override, o, st.Mode&unix.S_IFMT))
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	key, ok := whiteout.Escape(attr, n.root.ns)
	if !ok {
		return syscall.EPERM // overlay metadata is not the client's to write
	}
	if errno := n.refuseChange(); errno != 0 {
		return errno
	}
	dfd, name, errno := n.upperEntry(false)
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	defer n.xattrsChanged()
	var err error
	if name == "" {
		err = unix.Fsetxattr(dfd, key, data, int(flags))
	} else {
		err = unix.Lsetxattr(cow.ProcPath(dfd, name), key, data, int(flags))
	}
	if err != nil || attr != "system.posix_acl_access" {
		return toErrno(err)
	}
	return n.aclKillSGID(ctx)
}

// aclKillSGID drops S_ISGID after a caller outside the file's group and
// without CAP_FSETID set its access ACL, as chmod would (the kernel's
// posix_acl_update_mode); the daemon's own setxattr kept it.
func (n *node) aclKillSGID(ctx context.Context) syscall.Errno {
	var a fuse.AttrOut
	if errno := n.Getattr(ctx, nil, &a); errno != 0 {
		return errno
	}
	if a.Mode&unix.S_ISGID == 0 || callerInGroup(ctx, a.Gid) || callerHasFsetid(ctx) {
		return 0
	}
	in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE, Mode: a.Mode & 0o7777 &^ unix.S_ISGID}}
	return n.Setattr(ctx, nil, &in, &fuse.AttrOut{})
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	key, ok := whiteout.Escape(attr, n.root.ns)
	if !ok {
		return syscall.ENODATA
	}
	if errno := n.refuseChange(); errno != 0 {
		return errno
	}
	// Nothing to copy up for an xattr that is not there.
	if _, errno := n.Getxattr(ctx, attr, nil); errno == syscall.ENODATA {
		return errno
	}
	dfd, name, errno := n.upperEntry(false)
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	defer n.xattrsChanged()
	if name == "" {
		return toErrno(unix.Fremovexattr(dfd, key))
	}
	return toErrno(unix.Lremovexattr(cow.ProcPath(dfd, name), key))
}

// linkTmpfile gives the unnamed O_TMPFILE node t (open as fd) the name name.
func (n *node) linkTmpfile(ctx context.Context, t *node, fd int, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	errno := n.place(ctx, name, 0, false, func(sfd int, tmp string, _ uint32) error {
		return unix.Linkat(unix.AT_FDCWD, cow.ProcPath(fd, ""), sfd, tmp, unix.AT_SYMLINK_FOLLOW)
	})
	if errno != 0 {
		return nil, errno
	}
	var st unix.Stat_t
	if err := n.root.fstatShown(fd, &st); err != nil {
		return nil, toErrno(err)
	}
	t.named()
	t.fillAttr(n.root.upper, &st, &out.Attr)
	return t.EmbeddedInode(), 0
}
