package cow

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"unsafe"

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

// xattrArgs is the kernel's struct xattr_args (getxattrat, Linux 6.13+).
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// noXattrat is set once the kernel has answered getxattrat with ENOSYS.
var noXattrat atomic.Bool

// Getxattrat reads xattr key of entry name of the directory dfd into buf,
// never following name if it is a symlink: getxattrat(2) where the kernel has
// it (one call, no path walk), else lgetxattr through /proc/self/fd.
func Getxattrat(dfd int, name, key string, buf []byte) (int, error) {
	if !noXattrat.Load() {
		p, err := unix.BytePtrFromString(name)
		if err != nil {
			return 0, err
		}
		k, err := unix.BytePtrFromString(key)
		if err != nil {
			return 0, err
		}
		args := xattrArgs{size: uint32(len(buf))}
		if len(buf) > 0 {
			args.value = uint64(uintptr(unsafe.Pointer(&buf[0])))
		}
		n, _, errno := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(k)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
		runtime.KeepAlive(buf)
		if errno != unix.ENOSYS {
			if errno != 0 {
				return 0, errno
			}
			return int(n), nil
		}
		noXattrat.Store(true)
	}
	return unix.Lgetxattr(ProcPath(dfd, name), key, buf)
}

// noListxattrat is set once the kernel has answered listxattrat with ENOSYS.
var noListxattrat atomic.Bool

// Listxattrat lists the xattr names of entry name of the directory dfd,
// never following name if it is a symlink: one listxattrat(2) (Linux 6.13+),
// no path walk. ok is false where the kernel lacks the call; the caller then
// goes without (it is a shortcut, not a need).
func Listxattrat(dfd int, name string) (names []string, ok bool, err error) {
	if noListxattrat.Load() {
		return nil, false, nil
	}
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return nil, true, err
	}
	names, err = listxattr(func(buf []byte) (int, error) {
		var b unsafe.Pointer
		if len(buf) > 0 {
			b = unsafe.Pointer(&buf[0])
		}
		n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(b), uintptr(len(buf)), 0)
		runtime.KeepAlive(buf)
		if errno != 0 {
			return 0, errno
		}
		return int(n), nil
	})
	if err == unix.ENOSYS {
		noListxattrat.Store(true)
		return nil, false, nil
	}
	return names, true, err
}
