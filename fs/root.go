// Package fs is the FUSE node tree of ovlfs: it merges the layers of a Config into
// the tree that the kernel's overlayfs shows for them (docs/format.md).
package fs

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// Root is the root directory of an ovlfs mount and holds what every node shares.
type Root struct {
	node
	cfg    Config
	ns     whiteout.NS
	layers []*layer // upper first when there is one, then the lowers topmost first
	upper  *layer   // nil for a read-only mount
	// scratch is ovlfs's own directory in the workdir (nil without upper).
	scratch *cow.Scratch
	// copied maps the upper inode of a file copied up in this mount to the
	// identity of its node, so that another name of that upper file (a link
	// made later) is the same node and not a second, stale-cached one.
	copied sync.Map // copiedKey -> gofs.StableAttr
	// ids shifts owners (nil: none).
	ids *idMapper
	// tmpfiles holds an fd of each O_TMPFILE node not linked in yet.
	tmpfiles sync.Map // *node -> int
	// noHandles is set once open_by_handle_at was refused (not root).
	noHandles atomic.Bool
	// noTmpfileLink is set once linkat(AT_EMPTY_PATH) was refused (not
	// root): new files are then built in the scratch dir (createInPlace).
	noTmpfileLink atomic.Bool
	// passthrough: files may be served by FUSE passthrough, which the kernel
	// allows to root in the initial user namespace only, from Linux 6.9.
	passthrough atomic.Bool
	// renewed maps the identity of a node retired by retire to that of the
	// node that replaced it (see renew).
	renewed  sync.Map // gofs.StableAttr -> gofs.StableAttr
	nRenewed atomic.Int32
	renewSeq atomic.Uint64
	// cookieSeed hashes names into readdir offsets (see cookies).
	cookieSeed maphash.Seed
	// gone holds the directories removed or renamed over while the kernel
	// still knows them (see pinGoneDir).
	goneMu sync.Mutex
	gone   map[*node]goneDir
}

// NewRoot opens the layers of cfg. Each layer is opened once, as a directory fd
// that every later access goes through.
func NewRoot(cfg Config) (*Root, error) {
	if len(cfg.Lowers) == 0 {
		return nil, fmt.Errorf("no lower layer")
	}
	if (cfg.Upper == "") != (cfg.Work == "") {
		return nil, fmt.Errorf("upperdir and workdir go together")
	}
	r := &Root{cfg: cfg, ns: cfg.NS, ids: newIDMapper(&cfg), cookieSeed: maphash.MakeSeed()}
	r.passthrough.Store(!cfg.NoPassthrough && os.Geteuid() == 0 && whiteout.InitUserNS())
	if r.ns == 0 {
		r.ns = whiteout.DefaultNS()
	}
	paths := cfg.Lowers
	if cfg.Upper != "" {
		paths = append([]string{cfg.Upper}, cfg.Lowers...)
	}
	devs := map[uint64]uint64{}
	fsTypes := map[uint64]int64{} // by device: one statfs a filesystem
	workFd := -1
	defer func() {
		if workFd >= 0 {
			unix.Close(workFd)
		}
	}()
	for i, p := range paths {
		var fd, mnt int
		var err error
		if cfg.Upper != "" && i == 0 {
			fd, workFd, mnt, err = openUpperWork(p, cfg.Work, cfg.StrictAtime)
			if err == nil && mnt < 0 && cfg.StrictAtime {
				unix.Close(fd)
				unix.Close(workFd)
				workFd = -1
				err = fmt.Errorf("option strictatime: the daemon cannot make a private strictatime mount of the upper layer (it needs root); use relatime or noatime")
			}
		} else if fd, mnt, err = openLower(p); err != nil {
			err = &os.PathError{Op: "open layer", Path: p, Err: err}
		}
		if err != nil {
			r.Close()
			return nil, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			if mnt >= 0 {
				unix.Close(mnt)
			}
			r.Close()
			return nil, &os.PathError{Op: "stat layer", Path: p, Err: err}
		}
		bits, ok := devs[st.Dev]
		if !ok {
			bits = uint64(len(devs)) << 56
			devs[st.Dev] = bits
		}
		fsType, ok := fsTypes[st.Dev]
		if !ok {
			var sfs unix.Statfs_t
			unix.Fstatfs(fd, &sfs)
			fsType = sfs.Type
			fsTypes[st.Dev] = fsType
		}
		l := &layer{idx: i, path: p, fd: fd, mnt: mnt, upper: cfg.Upper != "" && i == 0, inoBits: bits, dev: st.Dev, fsType: fsType,
			passthrough: !stackedFs(fsType), noatimeFd: -1}
		r.layers = append(r.layers, l)
	}
	if err := r.setOverrides(); err != nil {
		r.Close()
		return nil, err
	}
	if cfg.Upper != "" {
		r.upper = r.layers[0]
		r.upper.noatime, r.upper.nodiratime = cfg.NoAtime, cfg.NoDirAtime
		if err := checkIncompat(cfg.Work); err != nil {
			r.Close()
			return nil, err
		}
		sc, err := cow.OpenScratch(workFd, cfg.Work, r.ns)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.scratch = sc
		if cfg.Volatile {
			if err := markVolatile(cfg.Work); err != nil {
				r.Close()
				return nil, err
			}
		}
		if err := r.initUUID(); err != nil {
			r.Close()
			return nil, err
		}
	}
	r.node.root = r
	stack := make([]layerEntry, len(r.layers))
	for i := range r.layers {
		stack[i] = layerEntry{layer: int32(i)}
	}
	r.node.stack = stack
	r.node.isDir = true
	return r, nil
}

// setOverrides finds the layers that keep owners and modes in an override
// xattr, as fuse-overlayfs does: a layer whose root carries one of the names
// (one listxattr a layer, at mount time only). With xattr_permissions= the
// upper layer uses the name of the option, and its root gets an override when
// it has none: a lower root's, else its own real owner and mode.
func (r *Root) setOverrides() error {
	want := ""
	switch r.cfg.XattrPermissions {
	case 0:
	case 1:
		want = whiteout.OverrideStatPrivileged
	case 2:
		want = whiteout.OverrideStatUser
	default:
		return fmt.Errorf("xattr_permissions=%d: want 0, 1 or 2", r.cfg.XattrPermissions)
	}
	for _, l := range r.layers {
		names, err := cow.Flistxattr(l.fd)
		if err != nil {
			return &os.PathError{Op: "listxattr", Path: l.path, Err: err}
		}
	find:
		for _, o := range whiteout.OverrideStatNames {
			for _, k := range names {
				if k == o {
					l.override = o
					break find
				}
			}
		}
	}
	if want == "" || r.cfg.Upper == "" {
		return nil
	}
	up := r.layers[0]
	has := up.override == want
	up.override = want
	if has {
		return nil
	}
	var v []byte
	for _, l := range r.layers[1:] {
		if l.override == want || (want == whiteout.OverrideStatUser && l.override == whiteout.OverrideStatContainers) {
			var err error
			if v, err = getxattrAt(l.fd, "", l.override); err != nil {
				return &os.PathError{Op: "getxattr " + l.override, Path: l.path, Err: err}
			}
			break
		}
	}
	if _, err := whiteout.ParseOverrideStat(v); err != nil {
		var st unix.Stat_t
		if err := unix.Fstat(up.fd, &st); err != nil {
			return &os.PathError{Op: "stat", Path: up.path, Err: err}
		}
		v = whiteout.OverrideStat{Uid: st.Uid, Gid: st.Gid, Mode: st.Mode}.Format()
	}
	if err := unix.Fsetxattr(up.fd, want, v, 0); err != nil {
		return fmt.Errorf("xattr_permissions=%d: cannot write %s on %s: %w", r.cfg.XattrPermissions, want, up.path, err)
	}
	return nil
}

// Close releases the layer fds.
func (r *Root) Close() {
	for _, l := range r.layers {
		l.close()
	}
	r.layers = nil
	if r.scratch != nil {
		r.scratch.Close()
	}
}

// followRedirects reports whether lookups follow X(redirect).
func (r *Root) followRedirects() bool {
	return r.ns == whiteout.Trusted && r.cfg.Redirect != "nofollow"
}

// writesRedirects reports whether a rename of a directory that merges lower
// layers writes X(redirect) (else it answers EXDEV).
func (r *Root) writesRedirects() bool {
	return r.ns == whiteout.Trusted && (r.cfg.Redirect == "" || r.cfg.Redirect == "on")
}

// NS returns the xattr namespace of the overlay metadata of this mount.
func (r *Root) NS() whiteout.NS { return r.ns }

func (r *Root) options(mo MountOptions) *gofs.Options {
	timeout := DefaultTimeout
	if r.cfg.Timeout != nil {
		timeout = *r.cfg.Timeout
	}
	name := mo.FsName
	if name == "" {
		name = "ovlfs"
	}
	opts := &gofs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName: name,
			Name:   "ovlfs",
			// Like fuse-overlayfs, a mount by root (also root of a user
			// namespace) serves every user: containers run processes under
			// many IDs. default_permissions keeps the modes in force.
			AllowOther:  mo.AllowOther || os.Geteuid() == 0,
			Debug:       mo.Debug,
			DirectMount: true,
			// No FUSE_POSIX_LOCKS or FUSE_FLOCK_LOCKS: the kernel keeps
			// fcntl, OFD and flock locks in its own VFS, local to this
			// mount, as it does for the kernel overlay. Each lock then has
			// its owner's semantics (a process's POSIX locks go when it
			// closes any fd of the file; F_OFD_GETLK sees only real
			// conflicts), which locks taken on the backing files by the
			// daemon cannot give.
			EnableLocks: false,
			// The kernel enforces POSIX ACLs, read through Getxattr. It then
			// leaves the umask to us (DONT_MASK): a default ACL replaces it.
			EnableAcl: r.acl(),
			// READDIRPLUS_AUTO: the kernel asks for attributes with the
			// listing only where the reader goes on to stat the entries.
			// ATOMIC_O_TRUNC: open(O_TRUNC) arrives as one OPEN, so a lower
			// file is copied up without its data instead of copied whole and
			// then truncated.
			// NO_EXPORT_SUPPORT: no file handles (name_to_handle_at answers
			// EOPNOTSUPP), as the kernel overlay without nfs_export: a
			// handle ovlfs gave out could not be opened again.
			ExtraCapabilities: dontMask(r.acl()) | fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_NO_EXPORT_SUPPORT,
			DisableXAttrs:     r.cfg.NoXattrs,
			MaxWrite:          1 << 20,
			// A symlink's target never changes: a new target is a new
			// symlink, and a copy-up keeps the target.
			EnableSymlinkCaching: true,
			// READ replies are copied, not spliced: the pages the kernel
			// then caches serve later reads of the file a quarter faster
			// (1 GiB warm dd, pinned, side by side: ~100 -> ~75 ms, as
			// fast as fuse-overlayfs), and first reads, sequential or 4k
			// random, cost the same either way.
			DisableSplice: true,
			// The kernel checks permissions from the modes we report, as it
			// does for the kernel overlay. Like the kernel overlay (and unlike
			// go-fuse's default), a mount by root honours setuid bits and
			// devices unless told nosuid/nodev; fusermount3 forces both for
			// everybody else.
			Options: append(rootDefaults(), kernelStrings(mo.Options)...),
			// Atime flags a mount(2) takes only as flags (fusermount3
			// knows noatime alone; without root, the daemon's own O_NOATIME
			// reads give nodiratime, and relatime is the default).
			DirectMountFlags: unix.MS_NOSUID | unix.MS_NODEV | atimeFlags(mo.Options),
		},
	}
	if r.upper == nil {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "ro")
	}
	var st unix.Stat_t
	if err := unix.Fstat(r.layers[0].fd, &st); err == nil {
		opts.RootStableAttr = &gofs.StableAttr{Ino: r.layers[0].inoBits | st.Ino}
	}
	return opts
}

// flagOnly are the mount options that go to the kernel as mount(2) flags.
var flagOnly = map[string]uintptr{"relatime": unix.MS_RELATIME, "strictatime": unix.MS_STRICTATIME, "nodiratime": unix.MS_NODIRATIME, "lazytime": unix.MS_LAZYTIME}

func atimeFlags(opts []string) uintptr {
	var f uintptr
	for _, o := range opts {
		f |= flagOnly[o]
	}
	return f
}

func kernelStrings(opts []string) []string {
	var out []string
	for _, o := range opts {
		if _, ok := flagOnly[o]; !ok {
			out = append(out, o)
		}
	}
	return out
}

func rootDefaults() []string {
	if os.Geteuid() == 0 {
		return []string{"default_permissions", "suid", "dev"}
	}
	return []string{"default_permissions"}
}

// acl reports whether the mount supports POSIX ACLs.
func (r *Root) acl() bool { return !r.cfg.NoACL && !r.cfg.NoXattrs }

func dontMask(on bool) uint64 {
	if on {
		return fuse.CAP_DONT_MASK
	}
	return 0
}

// callerUmask is the umask that a new object of the request ctx gets, where no
// default ACL replaces it. Without ACL support the kernel has applied it
// already. go-fuse does not hand on the umask the kernel sends with DONT_MASK,
// so it is read from the caller's /proc status.
func (r *Root) callerUmask(ctx context.Context) uint32 {
	if !r.acl() {
		return 0
	}
	if f := callerStatus(ctx, "Umask"); len(f) > 0 {
		if m, err := strconv.ParseUint(f[0], 8, 32); err == nil {
			return uint32(m) & 0o777
		}
	}
	return 0o022
}

// callerStatus returns the fields of line name of the /proc status of the
// caller of request ctx (nil where it cannot be read: no context, or a
// caller in a PID namespace the daemon does not see).
func callerStatus(ctx context.Context, name string) []string {
	c, ok := ctx.(*fuse.Context)
	if !ok || c.Pid == 0 {
		return nil
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(c.Pid), 10) + "/status")
	if err != nil {
		return nil
	}
	key := []byte("\n" + name + ":")
	i := bytes.Index(b, key)
	if i < 0 {
		return nil
	}
	line := b[i+len(key):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	return strings.Fields(string(line))
}

// callerHasFsetid reports whether the caller of request ctx has CAP_FSETID
// in the initial user namespace, which lets it keep set-ID bits where a
// truncate or write would drop them.
func callerHasFsetid(ctx context.Context) bool {
	c, ok := ctx.(*fuse.Context)
	if !ok {
		return true // the daemon itself
	}
	f := callerStatus(ctx, "CapEff")
	if len(f) == 0 {
		return c.Uid == 0
	}
	caps, err := strconv.ParseUint(f[0], 16, 64)
	if err != nil || caps&(1<<unix.CAP_FSETID) == 0 {
		return false
	}
	// CapEff counts in the caller's own user namespace.
	if !whiteout.InitUserNS() {
		return false
	}
	var mine, its unix.Stat_t
	return unix.Stat("/proc/self/ns/user", &mine) == nil &&
		unix.Stat("/proc/"+strconv.FormatUint(uint64(c.Pid), 10)+"/ns/user", &its) == nil &&
		mine.Ino == its.Ino && mine.Dev == its.Dev
}

// callerInGroup reports whether gid is the caller's file system group or one
// of its supplementary groups (IDs as the mount shows them).
func callerInGroup(ctx context.Context, gid uint32) bool {
	c, ok := ctx.(*fuse.Context)
	if !ok || c.Gid == gid {
		return true
	}
	for _, g := range callerStatus(ctx, "Groups") {
		if v, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(v) == gid {
			return true
		}
	}
	return false
}
