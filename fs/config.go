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
	// NoFsync ignores fsync (fsync=0, volatile).
	NoFsync bool
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
