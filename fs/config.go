package fs

import (
	"time"

	"github.com/ovlfs/ovlfs/whiteout"
)

// Config says which layers to merge and how. cmd/ovlfs builds it from the
// fuse-overlayfs-compatible command line.
type Config struct {
	// Lowers are the read-only layers, topmost first. At least one.
	Lowers []string
	// Upper is the writable layer; empty for a read-only mount.
	Upper string
	// Work is the scratch directory on the same filesystem as Upper.
	Work string
	// NS is where overlay metadata lives; zero means: Trusted when the process
	// may write trusted.* xattrs (real root), User otherwise.
	NS whiteout.NS
	// Redirect is the kernel's redirect_dir= mode: "on" (write and follow
	// redirects; also ""), "follow" (follow, write none), "nofollow"
	// (neither) or "off" (as the kernel built with redirect_always_follow:
	// follow, write none). Without redirects to write, renaming a directory
	// that merges lower layers answers EXDEV (mv then copies). Redirects are
	// never followed or written in the user NS (userxattr), as the kernel.
	Redirect string
	// StaticNlink makes directories report st_nlink 1.
	StaticNlink bool
	// NoXattrs refuses every xattr operation.
	NoXattrs bool
	// NoACL leaves POSIX ACLs unenforced (noacl), as a filesystem without them.
	NoACL bool
	// Timeout is the kernel's entry and attribute cache lifetime; nil means
	// DefaultTimeout. Every change made through the mount reaches the kernel's
	// caches at once; the timeout only bounds how long a change made to the
	// layers behind the mount's back may stay unseen.
	Timeout *time.Duration
	// NoAtime and NoDirAtime: the mount is noatime (or nodiratime), and
	// ovlfs's own reads of upper files (directories) leave their atime
	// alone, as the kernel overlay's do.
	NoAtime, NoDirAtime bool
	// StrictAtime: every open of a file reads it again through ovlfs (no
	// page cache kept across opens), from a private strictatime mount of the
	// upper layer, so that its atime moves as on a strictatime mount. Root
	// only; not with a read-only mount.
	StrictAtime bool
	// NoFsync ignores fsync (fsync=0, volatile).
	NoFsync bool
	// Volatile marks the work dir as the kernel's volatile mount does
	// (work/incompat/volatile/dirty), so that no later mount, by the kernel
	// or ovlfs, uses an upper that may have lost writes until the user
	// removes the mark.
	Volatile bool
	// UUID is the kernel's uuid= mode: "on", "auto" (also ""), "null" or
	// "off". on, and auto on a new upper (its root not yet impure), keep an
	// X(uuid) on the upper root, as the kernel does. File handles in
	// X(origin) carry a null uuid in every mode.
	UUID string
	// NoPassthrough serves every read and write through FUSE requests, even
	// where the kernel would let upper files be passed through.
	NoPassthrough bool
	// UIDMap and GIDMap shift owners between the disk and the mount
	// (uidmapping=, gidmapping=); empty: no shifting.
	UIDMap, GIDMap []IDMap
	// SquashUID and SquashGID, when set, show every file as owned by that ID.
	SquashUID, SquashGID *uint32
	// XattrPermissions keeps the owner and mode of upper files in an xattr
	// instead of for real, as fuse-overlayfs's xattr_permissions=: 1 in
	// security.fuseoverlayfs.override_stat, 2 in user.fuseoverlayfs.override_stat,
	// 0 not (unless the upper root already carries an override).
	XattrPermissions int
}

// DefaultTimeout is long: the daemon owns its layers, every change made through
// the mount reaches the kernel's caches at once, and cache hits are what make a
// FUSE overlay fast.
const DefaultTimeout = time.Hour
