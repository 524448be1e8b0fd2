// Package whiteout knows every on-disk marker of the kernel overlayfs format and of
// the compatibility formats (fuse-overlayfs, OCI/AUFS) that ovlfs reads: whiteouts,
// opaque directories, redirects, metacopy files and the private xattrs that clients
// must never see or forge. See docs/format.md.
package whiteout

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// NS is the xattr namespace of the overlay metadata of one layer set.
type NS uint8

const (
	// Trusted is the kernel's default format (trusted.overlay.*), for real root.
	Trusted NS = iota + 1
	// User is the kernel's userxattr format (user.overlay.*), for everybody else.
	User
)

func (ns NS) String() string {
	switch ns {
	case Trusted:
		return "trusted"
	case User:
		return "user"
	}
	return "unset"
}

// Prefix returns "trusted.overlay." or "user.overlay.".
func (ns NS) Prefix() string { return ns.String() + ".overlay." }

// Key returns the xattr name of overlay key k in ns: X(k) in docs/format.md.
func (ns NS) Key(k string) string { return ns.Prefix() + k }

// Overlay metadata keys (the part after "<ns>.overlay.").
const (
	Opaque   = "opaque"
	Whiteout = "whiteout"
	Redirect = "redirect"
	Metacopy = "metacopy"
	Origin   = "origin"
	Impure   = "impure"
	Nlink    = "nlink"
	Upper    = "upper"
	UUID     = "uuid"
	Protattr = "protattr"
)

// Names of the compatibility (OCI/AUFS, fuse-overlayfs) markers.
const (
	// WhPrefix marks ".wh.N", which hides N in its layer and the layers below.
	WhPrefix = ".wh."
	// OpaqueMarker inside a directory makes that directory opaque.
	OpaqueMarker = ".wh..wh..opq"
	// FuseOverlayfsPrefix is fuse-overlayfs's private xattr namespace.
	FuseOverlayfsPrefix = "user.fuseoverlayfs."
)

// IsWhiteoutDev reports whether a file of mode and rdev is a kernel whiteout: a
// character device 0/0, whatever its permission bits and owner.
func IsWhiteoutDev(mode uint32, rdev uint64) bool {
	return mode&unix.S_IFMT == unix.S_IFCHR && rdev == 0
}

// IsWhiteoutStat reports whether st is a kernel whiteout.
func IsWhiteoutStat(st *unix.Stat_t) bool {
	return IsWhiteoutDev(st.Mode, st.Rdev)
}

// IsMarkerName reports whether name is an OCI/AUFS marker (".wh.*"), never shown.
func IsMarkerName(name string) bool { return strings.HasPrefix(name, WhPrefix) }

// HiddenBy returns the name that the marker ".wh.N" hides, or "" when name is not
// such a marker (including ".wh..wh.*" meta markers such as the opaque marker).
func HiddenBy(name string) string {
	if !strings.HasPrefix(name, WhPrefix) || strings.HasPrefix(name, WhPrefix+WhPrefix) {
		return ""
	}
	return name[len(WhPrefix):]
}

// MarkerFor returns ".wh.N", the OCI marker that hides name.
func MarkerFor(name string) string { return WhPrefix + name }

// OpaqueValue classifies the value of X(opaque).
type OpaqueValue uint8

const (
	NotOpaque OpaqueValue = iota
	// IsOpaque: the value is exactly "y".
	IsOpaque
	// HasXattrWhiteouts: the value is exactly "x": the directory holds xattr
	// whiteouts (kernel 6.8+), and is not opaque.
	HasXattrWhiteouts
)

// ClassifyOpaque reads an X(opaque) value: only "y" is opaque and only "x" says the
// directory has xattr whiteouts; anything else means neither.
func ClassifyOpaque(v []byte) OpaqueValue {
	if len(v) == 1 {
		switch v[0] {
		case 'y':
			return IsOpaque
		case 'x':
			return HasXattrWhiteouts
		}
	}
	return NotOpaque
}

// CompatOpaqueKeys are the xattrs that fuse-overlayfs-style layers use to mark a
// directory opaque (value "y"), read in either NS.
var CompatOpaqueKeys = []string{"user.overlay.opaque", "user.fuseoverlayfs.opaque"}

// ErrBadRedirect is returned for a redirect that is malformed or would leave the
// overlay root.
var ErrBadRedirect = errors.New("invalid overlay redirect")

// ParseRedirect checks an X(redirect) value. It returns the clean path components
// and whether the value is absolute (a path from the overlay root) or relative (a
// sibling name: one component). Values with "..", ".", empty components, NUL, or a
// relative value with a "/" are refused: ovlfs never follows a redirect outside the
// layer.
func ParseRedirect(v []byte) (parts []string, abs bool, err error) {
	s := string(v)
	if len(s) == 0 || len(s) > 4096 || strings.IndexByte(s, 0) >= 0 {
		return nil, false, ErrBadRedirect
	}
	if s[0] == '/' {
		abs = true
		s = strings.TrimRight(s[1:], "/")
		if s == "" {
			return nil, true, ErrBadRedirect
		}
	} else if strings.IndexByte(s, '/') >= 0 {
		return nil, false, ErrBadRedirect
	}
	parts = strings.Split(s, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return nil, false, ErrBadRedirect
		}
	}
	return parts, abs, nil
}

// IsPrivateXattr reports whether the on-disk xattr name is overlay metadata that a
// client must not see through a mount whose metadata lives in ns. The escaped form
// "<ns>.overlay.overlay.K" is not private: it is a client's "<ns>.overlay.K" (see
// Unescape). Owner-and-mode overrides are private in every mount: a client that
// could write one would choose the owner and mode a later mount shows.
func IsPrivateXattr(name string, ns NS) bool {
	if strings.HasPrefix(name, FuseOverlayfsPrefix) || IsOverrideStat(name) {
		return true
	}
	p := ns.Prefix()
	if strings.HasPrefix(name, p) {
		return !strings.HasPrefix(name[len(p):], "overlay.")
	}
	if ns == Trusted && name == "user.overlay.opaque" {
		// Read as a compatibility opaque marker, so it is metadata here too.
		return true
	}
	return false
}

// Unescape maps an on-disk xattr name to the name a client sees: the kernel stores
// a client's "<ns>.overlay.K" as "<ns>.overlay.overlay.K". ok is false for private
// names, which clients never see.
func Unescape(name string, ns NS) (client string, ok bool) {
	if IsPrivateXattr(name, ns) {
		return "", false
	}
	p := ns.Prefix()
	if strings.HasPrefix(name, p+"overlay.") {
		return p + name[len(p)+len("overlay."):], true
	}
	return name, true
}

// Escape maps a client's xattr name to the on-disk name, so that a client can never
// write overlay metadata. ok is false for names a client may not use at all.
func Escape(name string, ns NS) (disk string, ok bool) {
	if strings.HasPrefix(name, FuseOverlayfsPrefix) || IsOverrideStat(name) {
		return "", false
	}
	p := ns.Prefix()
	if strings.HasPrefix(name, p) {
		return p + "overlay." + name[len(p):], true
	}
	if ns == Trusted && name == "user.overlay.opaque" {
		return "", false
	}
	return name, true
}
