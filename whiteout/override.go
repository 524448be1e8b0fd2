package whiteout

import (
	"errors"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Owner and mode that a filesystem cannot hold for real (rootless, no chown)
// are kept in an xattr "UID:GID:MODE" (decimal, decimal, octal), as
// fuse-overlayfs's xattr_permissions= and containers/storage's force_mask
// write them. A layer uses one of these names when its root directory
// carries it; the first of this list that the root has wins.
const (
	// OverrideStatPrivileged is written with xattr_permissions=1.
	OverrideStatPrivileged = "security.fuseoverlayfs.override_stat"
	// OverrideStatContainers is written by containers/storage (force_mask);
	// ovlfs reads it, never writes it.
	OverrideStatContainers = "user.containers.override_stat"
	// OverrideStatUser is written with xattr_permissions=2.
	OverrideStatUser = "user.fuseoverlayfs.override_stat"

	privilegedFuseOverlayfsPrefix = "security.fuseoverlayfs."
)

// OverrideStatNames lists the override names in the order a layer root is
// checked for them.
var OverrideStatNames = []string{OverrideStatPrivileged, OverrideStatContainers, OverrideStatUser}

// IsOverrideStat reports whether name is an owner-and-mode override or
// another key of fuse-overlayfs's security.* namespace.
func IsOverrideStat(name string) bool {
	return name == OverrideStatContainers || name == OverrideStatUser ||
		strings.HasPrefix(name, privilegedFuseOverlayfsPrefix)
}

// OverrideStat is the owner (on-disk IDs) and permission bits an override
// holds.
type OverrideStat struct {
	Uid, Gid, Mode uint32
}

// ErrBadOverrideStat is returned for an override value that is not
// "UID:GID:MODE".
var ErrBadOverrideStat = errors.New("invalid owner-and-mode override")

// ParseOverrideStat reads "UID:GID:MODE". MODE may carry file type bits
// (fuse-overlayfs writes st_mode whole after a chmod) and further ":..."
// fields may follow (newer containers/storage adds the file type); both are
// ignored, as fuse-overlayfs 1.10 ignores them: only the permission bits count.
func ParseOverrideStat(v []byte) (OverrideStat, error) {
	f := strings.SplitN(strings.TrimRight(string(v), "\x00"), ":", 4)
	if len(f) < 3 {
		return OverrideStat{}, ErrBadOverrideStat
	}
	uid, err1 := strconv.ParseUint(f[0], 10, 32)
	gid, err2 := strconv.ParseUint(f[1], 10, 32)
	mode, err3 := strconv.ParseUint(f[2], 8, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return OverrideStat{}, ErrBadOverrideStat
	}
	return OverrideStat{Uid: uint32(uid), Gid: uint32(gid), Mode: uint32(mode) & 0o7777}, nil
}

// Format returns the xattr value of o: "UID:GID:MODE", permission bits only.
func (o OverrideStat) Format() []byte {
	return []byte(strconv.FormatUint(uint64(o.Uid), 10) + ":" + strconv.FormatUint(uint64(o.Gid), 10) +
		":" + strconv.FormatUint(uint64(o.Mode&0o7777), 8))
}

// Apply puts o's owner and permission bits into st, keeping its file type.
func (o OverrideStat) Apply(st *unix.Stat_t) {
	st.Uid, st.Gid = o.Uid, o.Gid
	st.Mode = st.Mode&unix.S_IFMT | o.Mode&0o7777
}

// OverrideFits reports whether a file of mode keeps its owner and mode in an
// override: regular files and directories. The kernel refuses user.* xattrs
// on the other types, and ovlfs keeps those owned for real in both modes.
func OverrideFits(mode uint32) bool {
	t := mode & unix.S_IFMT
	return t == unix.S_IFREG || t == unix.S_IFDIR
}
