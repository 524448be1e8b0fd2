package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// idMap is one A:B:N range of uidmapping= or gidmapping=. As fuse-overlayfs
// reads it (checked with fuse-overlayfs 1.10): on-disk IDs A..A+N-1 show as
// B..B+N-1; containers/storage sends A = container ID, B = host ID.
type idMap struct {
	Disk, View, Size uint32
}

// options is the parsed command line. It is a pure value: parsing looks at no
// file, so that the parser can be tested and fuzzed on its own.
type options struct {
	Source     string // SOURCE of the mount.fuse3 form, used as FsName
	Mountpoint string

	Version, Help bool
	Foreground    bool // -f, -d or -o debug
	Debug         bool // -d or -o debug

	Lowers      []string // topmost first, unescaped
	Upper, Work string
	// UpperSet and WorkSet tell "upperdir=" (an error) from no upperdir.
	UpperSet, WorkSet bool

	StaticNlink bool
	NoXattrs    bool
	NoFsync     bool // fsync=0 or volatile
	Timeout     time.Duration
	TimeoutSet  bool

	AllowOther, AllowRoot, DefaultPermissions bool
	// Kernel are the generic mount options handed to the kernel as they are
	// (ro, nodev, nosuid, noexec, noatime, context=...), last setting wins.
	Kernel []string

	UIDMap, GIDMap   []idMap
	SquashToRoot     bool
	SquashUID        int64 // -1: not set
	SquashGID        int64 // -1: not set
	XattrPermissions int
	Threaded         bool
	Writeback        bool
	FastIno          bool
	NoACL            bool
	RedirectDir      string
	Xino             string
	// UserXattr: overlay metadata in user.overlay.* (-o userxattr), as
	// the kernel writes it in a user namespace; the default as non-root.
	UserXattr bool
	// Volatile: -o volatile (fsync ignored, and the work dir marked as
	// the kernel marks it).
	Volatile bool
	// UUID is uuid=: on, auto (""), null or off.
	UUID string
	// Remount: -o remount (mount -o remount through mount.fuse3): change
	// the flags of the live mount at Mountpoint instead of mounting.
	Remount bool

	// Unknown lists options that are warned about and ignored.
	Unknown []string
}

// usage is the text of --help.
const usage = `usage: ovlfs [-f] [-d] -o lowerdir=L1:L2[,upperdir=U,workdir=W][,OPTS] [SOURCE] MOUNTPOINT
       ovlfs --version | --help

Mounts the overlay of the lower layers (leftmost topmost) and the optional
upper layer at MOUNTPOINT, with the command line of fuse-overlayfs.

  -o OPTS        comma-separated mount options (may be repeated)
  -f             stay in the foreground
  -d             foreground, trace every FUSE request on stderr (-o debug)
  -V, --version  print the version
  -h, --help     print this help

Options: lowerdir=A:B (\: escapes a colon), upperdir=U, workdir=W,
static_nlink, noxattrs=1, fsync=0, volatile, timeout=SECONDS, allow_other,
allow_root, default_permissions, ro, nodev, nosuid, noexec, noatime,
context=..., debug, uidmapping=A:B:N[:A:B:N...] and gidmapping= (on-disk
IDs A.. show as B..), squash_to_root, squash_to_uid=N, squash_to_gid=N,
xattr_permissions=1|2 (owner and mode of upper files kept in the xattr
security.fuseoverlayfs.override_stat or user.fuseoverlayfs.override_stat).
As the kernel overlay: redirect_dir=on|follow|nofollow|off, userxattr,
uuid=on|auto|null|off, xino=, relatime, nodiratime, strictatime (root),
remount, and metacopy=, index=, nfs_export=, verity= (off only).
Accepted for compatibility: threaded=, writeback=, fast_ino=, noacl, rw,
dev, suid, exec, atime, user, nofail, _netdev, auto, noauto.
`

// parseArgs parses the command line (without the program name).
func parseArgs(args []string) (*options, error) {
	fl := pflag.NewFlagSet("ovlfs", pflag.ContinueOnError)
	fl.SetInterspersed(true)
	fl.SetOutput(io.Discard)
	fl.Usage = func() {}
	var (
		opts    []string
		o       options
		single  bool
		version bool
	)
	fl.StringArrayVarP(&opts, "options", "o", nil, "mount options")
	fl.BoolVarP(&o.Foreground, "foreground", "f", false, "foreground")
	fl.BoolVarP(&o.Debug, "debug", "d", false, "debug")
	fl.BoolVarP(&version, "version", "V", false, "version")
	fl.BoolVarP(&o.Help, "help", "h", false, "help")
	// libfuse's -s (single-threaded) is accepted for compatibility.
	fl.BoolVarP(&single, "single", "s", false, "")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			o.Help = true
			return &o, nil
		}
		return nil, err
	}
	o.Version = version
	if o.Version || o.Help {
		return &o, nil
	}
	if err := o.parseOpts(strings.Join(opts, ",")); err != nil {
		return nil, err
	}
	if o.Debug {
		o.Foreground = true
	}
	pos := fl.Args()
	switch len(pos) {
	case 0:
		return nil, errors.New("no mount point given (see ovlfs --help)")
	case 1:
		o.Mountpoint = pos[0]
	case 2:
		o.Source, o.Mountpoint = pos[0], pos[1]
	default:
		return nil, fmt.Errorf("too many arguments: %q", pos)
	}
	if o.Mountpoint == "" {
		return nil, errors.New("empty mount point")
	}
	return &o, nil
}

// parseOpts parses a joined -o string into o.
func (o *options) parseOpts(s string) error {
	o.SquashUID, o.SquashGID = -1, -1
	kernel := map[string]int{} // option group -> index in o.Kernel
	setKernel := func(group, opt string) {
		if i, ok := kernel[group]; ok {
			o.Kernel[i] = opt
			return
		}
		kernel[group] = len(o.Kernel)
		o.Kernel = append(o.Kernel, opt)
	}
	for _, item := range splitOpts(s) {
		if item == "" {
			continue
		}
		key, val, hasVal := strings.Cut(item, "=")
		bad := func(what string) error {
			return fmt.Errorf("option %s: %s", item, what)
		}
		switch key {
		case "lowerdir":
			if !hasVal || val == "" {
				return bad("needs at least one directory")
			}
			o.Lowers = nil
			for _, l := range splitEscaped(val, ':') {
				if l == "" {
					return bad("empty directory in the list")
				}
				o.Lowers = append(o.Lowers, unescape(l))
			}
		case "upperdir", "workdir":
			if !hasVal || val == "" {
				return bad("needs a directory")
			}
			if key == "upperdir" {
				o.Upper, o.UpperSet = unescape(val), true
			} else {
				o.Work, o.WorkSet = unescape(val), true
			}
		case "uidmapping", "gidmapping":
			m, err := parseIDMap(val)
			if err != nil || !hasVal {
				return bad("want C:H:N[:C:H:N...]")
			}
			if key == "uidmapping" {
				o.UIDMap = m
			} else {
				o.GIDMap = m
			}
		case "squash_to_root":
			if hasVal {
				return bad("takes no value")
			}
			o.SquashToRoot = true
		case "squash_to_uid", "squash_to_gid":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				return bad("want a numeric ID")
			}
			if key == "squash_to_uid" {
				o.SquashUID = int64(n)
			} else {
				o.SquashGID = int64(n)
			}
		case "xattr_permissions":
			switch val {
			case "0":
				o.XattrPermissions = 0
			case "1", "2":
				o.XattrPermissions = int(val[0] - '0')
			default:
				return bad("want 0, 1 or 2")
			}
		case "static_nlink", "volatile", "noacl", "debug", "allow_other", "allow_root", "default_permissions", "userxattr", "remount":
			if hasVal {
				return bad("takes no value")
			}
			switch key {
			case "static_nlink":
				o.StaticNlink = true
			case "volatile":
				o.NoFsync, o.Volatile = true, true
			case "userxattr":
				o.UserXattr = true
			case "remount":
				o.Remount = true
			case "noacl":
				o.NoACL = true
			case "debug":
				o.Debug = true
			case "allow_other":
				o.AllowOther = true
			case "allow_root":
				o.AllowRoot = true
			case "default_permissions":
				o.DefaultPermissions = true
			}
		case "noxattrs", "fsync", "threaded", "writeback", "fast_ino":
			b, ok := parseBit(val, hasVal)
			if !ok {
				return bad("want 0 or 1")
			}
			switch key {
			case "noxattrs":
				o.NoXattrs = b
			case "fsync":
				if !b {
					o.NoFsync = true
				}
			case "threaded":
				o.Threaded = b
			case "writeback":
				o.Writeback = b
			case "fast_ino":
				o.FastIno = b
			}
		case "timeout":
			f, err := strconv.ParseFloat(val, 64)
			if err != nil || f < 0 || math.IsNaN(f) || f > 1e6 {
				return bad("want a number of seconds")
			}
			o.Timeout = time.Duration(f * float64(time.Second))
			o.TimeoutSet = true
		case "redirect_dir":
			switch val {
			case "off", "on", "follow", "nofollow":
				o.RedirectDir = val
			default:
				return bad("want off, on, follow or nofollow")
			}
		case "xino":
			switch val {
			case "off", "on", "auto":
				o.Xino = val
			default:
				return bad("want off, auto or on")
			}
		case "uuid":
			switch val {
			case "on", "auto", "null", "off":
				o.UUID = val
			default:
				return bad("want on, auto, null or off")
			}
		case "metacopy", "index", "nfs_export", "verity":
			// Kernel features that change what lands on disk: ovlfs
			// writes none of them, so only "off" can be honoured.
			switch {
			case val == "off":
			case key == "verity" && (val == "on" || val == "require"), key != "verity" && val == "on":
				return fmt.Errorf("option %s: not supported by ovlfs (it writes no %s; the kernel overlay does)", item, key)
			default:
				if key == "verity" {
					return bad("want off, on or require")
				}
				return bad("want on or off")
			}
		case "ro", "rw":
			setKernel("ro", key)
		case "nodev", "dev", "nosuid", "suid", "noexec", "exec":
			setKernel(strings.TrimPrefix(key, "no"), key)
		case "atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime", "nolazytime", "diratime", "nodiratime":
			if hasVal {
				return bad("takes no value")
			}
			group := "atime"
			switch key {
			case "diratime", "nodiratime":
				group = "diratime"
			case "lazytime", "nolazytime":
				group = "lazytime"
			}
			setKernel(group, key)
		case "context", "fscontext", "defcontext", "rootcontext":
			if !hasVal || val == "" {
				return bad("needs a value")
			}
			setKernel(key, item)
		case "user", "nofail", "_netdev", "auto", "noauto":
			// mount(8) options with no meaning for the file system.
		default:
			o.Unknown = append(o.Unknown, item)
		}
	}
	o.Kernel = dropDefaults(o.Kernel)
	return nil
}

// dropDefaults removes the kernel options that only restate the default (rw,
// dev, suid, exec, atime): they are accepted, the kernel need not see them.
func dropDefaults(k []string) []string {
	out := k[:0]
	for _, s := range k {
		switch s {
		case "rw", "dev", "suid", "exec", "atime", "diratime", "nolazytime", "norelatime", "nostrictatime":
			continue
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// parseBit parses the value of a 0/1 option; a bare name means 1.
func parseBit(val string, hasVal bool) (bool, bool) {
	if !hasVal {
		return true, true
	}
	switch val {
	case "0":
		return false, true
	case "1":
		return true, true
	}
	return false, false
}

// parseIDMap parses C:H:N[:C:H:N...]; containers/storage may send a leading ':'.
func parseIDMap(s string) ([]idMap, error) {
	s = strings.TrimPrefix(s, ":")
	f := strings.Split(s, ":")
	if s == "" || len(f)%3 != 0 {
		return nil, errors.New("want C:H:N triples")
	}
	var m []idMap
	for i := 0; i < len(f); i += 3 {
		var n [3]uint32
		for j := range n {
			v, err := strconv.ParseUint(f[i+j], 10, 32)
			if err != nil {
				return nil, err
			}
			n[j] = uint32(v)
		}
		if n[2] == 0 || uint64(n[0])+uint64(n[2]) > 1<<32 || uint64(n[1])+uint64(n[2]) > 1<<32 {
			return nil, errors.New("bad range")
		}
		m = append(m, idMap{Disk: n[0], View: n[1], Size: n[2]})
	}
	return m, nil
}

// splitOpts splits an -o string at the commas that are neither escaped with a
// backslash nor inside double quotes (an SELinux context="...:c1,c2" holds
// commas). Backslash escapes are kept for the value's own unescaping; the
// quotes of a quoted value are kept too (the kernel wants them for context=).
func splitOpts(s string) []string {
	var (
		out    []string
		cur    strings.Builder
		quoted bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			if s[i+1] == ',' {
				// "\," is a comma inside a value; it needs no further escape.
				cur.WriteByte(',')
			} else {
				cur.WriteByte(c)
				cur.WriteByte(s[i+1])
			}
			i++
		case c == '"':
			quoted = !quoted
			cur.WriteByte(c)
		case c == ',' && !quoted:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String())
}

// splitEscaped splits s at each sep that is not escaped with a backslash,
// keeping the escapes.
func splitEscaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape turns "\x" into "x" (so "\:" is ':' and "\\" is '\'). A trailing
// lone backslash stays.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
