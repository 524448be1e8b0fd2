package cow

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// ProcPath names entry name of the open directory dfd for the path-based l*xattr
// calls: the magic link resolves to dfd, and the last component is never followed.
func ProcPath(dfd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dfd)
	if name != "" {
		p += "/" + name
	}
	return p
}

// Llistxattr lists the xattr names of path without following it.
func Llistxattr(path string) ([]string, error) {
	return listxattr(func(buf []byte) (int, error) { return unix.Llistxattr(path, buf) })
}

// Lgetxattr reads xattr key of path without following it.
func Lgetxattr(path, key string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, key, buf)
		if err == unix.ERANGE && len(buf) < 1<<16 {
			buf = make([]byte, 1<<16)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// Flistxattr lists the xattr names of the open file fd.
func Flistxattr(fd int) ([]string, error) {
	return listxattr(func(buf []byte) (int, error) { return unix.Flistxattr(fd, buf) })
}

// listxattr calls list with a buffer that grows until the names fit; a
// filesystem without xattrs has none.
func listxattr(list func([]byte) (int, error)) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		sz, err := list(buf)
		if err == unix.ERANGE && len(buf) < 1<<20 {
			buf = make([]byte, 4*len(buf))
			continue
		}
		if err == unix.ENOTSUP {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return splitNames(buf[:sz]), nil
	}
}

// splitNames splits a NUL-separated list of xattr names.
func splitNames(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
