package layout

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// openBeneath opens rel below the directory dfd without following any symlink
// and without leaving dfd.
func openBeneath(dfd int, rel string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(dfd, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// openDir opens the directory rel below dfd ("." for dfd itself).
func openDir(dfd int, rel string) (int, error) {
	return openBeneath(dfd, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
}

// readFile reads the store file rel.
func (s *Store) readFile(rel string) ([]byte, error) {
	fd, err := openBeneath(s.fd, rel, unix.O_RDONLY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: s.path(rel), Err: err}
	}
	f := os.NewFile(uintptr(fd), s.path(rel))
	defer f.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(f); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeFileAt replaces rel below dfd with data: written beside it, then
// renamed over it, so a reader sees the old or the new file whole.
func writeFileAt(dfd int, rel string, data []byte, perm uint32) error {
	tmp := rel + ".tmp-" + randomHex(4)
	fd, err := openBeneath(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, perm)
	if err != nil {
		return &os.PathError{Op: "create", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, rel)
	}
	if err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return &os.PathError{Op: "write", Path: rel, Err: err}
	}
	return nil
}

func readlinkAt(dfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// readNames lists the entries of the directory rel below dfd.
func readNames(dfd int, rel string) ([]string, error) {
	fd, err := openDir(dfd, rel)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	return f.Readdirnames(-1)
}

// lstatAt stats entry name of dfd without following it.
func lstatAt(dfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// xattrsAt returns the xattrs of entry name of dfd (nil on a file system
// without xattrs).
func xattrsAt(dfd int, name string) (map[string][]byte, error) {
	var names []string
	var err error
	if name == "" {
		names, err = cow.Flistxattr(dfd)
	} else {
		names, err = cow.Llistxattr(cow.ProcPath(dfd, name))
	}
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		var v []byte
		if name == "" {
			v = getXattrAt(dfd, "", n)
			if v == nil {
				continue
			}
		} else if v, err = cow.Lgetxattr(cow.ProcPath(dfd, name), n); err == unix.ENODATA {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", n, err)
		}
		out[n] = v
	}
	return out, nil
}

// getXattrAt reads one xattr of entry name of dfd, or of dfd itself when name
// is "" (nil when absent).
func getXattrAt(dfd int, name, key string) []byte {
	if name == "" {
		buf := make([]byte, 64<<10)
		n, err := unix.Fgetxattr(dfd, key, buf)
		if err != nil {
			return nil
		}
		return buf[:n]
	}
	v, err := cow.Lgetxattr(cow.ProcPath(dfd, name), key)
	if err != nil {
		return nil
	}
	return v
}

// setXattrAt sets an xattr of entry name of dfd, or of dfd itself when name is "".
func setXattrAt(dfd int, name, key string, v []byte) error {
	if name == "" {
		return unix.Fsetxattr(dfd, key, v, 0)
	}
	return unix.Lsetxattr(cow.ProcPath(dfd, name), key, v, 0)
}

// removeXattrAt removes an xattr of entry name of dfd, or of dfd itself.
func removeXattrAt(dfd int, name, key string) error {
	if name == "" {
		return unix.Fremovexattr(dfd, key)
	}
	return unix.Lremovexattr(cow.ProcPath(dfd, name), key)
}

// isOpaqueAt reports whether dir entry name of dfd carries X(opaque)="y".
func isOpaqueAt(dfd int, name string, ns whiteout.NS) bool {
	return whiteout.ClassifyOpaque(getXattrAt(dfd, name, ns.Key(whiteout.Opaque))) == whiteout.IsOpaque
}

// IsMountPoint reports whether path is a mount point in the caller's mount
// namespace (per /proc/self/mountinfo).
func IsMountPoint(path string) bool {
	if path == "" {
		return false
	}
	for _, mp := range MountPoints() {
		if mp == path {
			return true
		}
	}
	return false
}

// MountPoints lists the mount points of the caller's mount namespace.
func MountPoints() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			out = append(out, unescapeMountinfo(f[4]))
		}
	}
	return out
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
