package tests

// Paths longer than PATH_MAX: the kernel overlay works on dentries, so an
// entry whose path from the overlay root is longer than 4095 bytes can be
// created, renamed, removed and changed like any other. The client reaches it
// by *at calls from directory fds; ovlfs must serve every operation there and
// write the upper the kernel writes.

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// deepNames are the components of a directory 18*251 = 4518 bytes below
// the layer root: longer than PATH_MAX from there.
func deepNames() []string {
	var names []string
	for i := range 18 {
		names = append(names, fmt.Sprintf("%02d", i)+strings.Repeat("d", 248))
	}
	return names
}

// openDeep walks names from base by openat, one component at a time (mkdir
// first where create), and returns an fd of the last directory.
func openDeep(t *testing.T, base string, names []string, create bool) int {
	t.Helper()
	fd, err := unix.Open(base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if create {
			if err := unix.Mkdirat(fd, n, 0o755); err != nil {
				unix.Close(fd)
				t.Fatalf("mkdir %.8s...: %v", n, err)
			}
		}
		next, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("open %.8s... below %s: %v", n, base, err)
		}
		fd = next
	}
	return fd
}

// listDeep lists directory fd (and one level of its subdirectories): name,
// type, mode, size and the user.* xattrs of each entry.
func listDeep(fd int, prefix string) []string {
	names, err := readNamesAt(fd)
	if err != nil {
		return []string{"readdir: " + err.Error()}
	}
	var out []string
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			out = append(out, prefix+n+" "+errName(err))
			continue
		}
		x, _ := listXattrs(procAt(fd, n), func(k string) bool { return strings.HasPrefix(k, "user.") })
		out = append(out, fmt.Sprintf("%s%s %s %o %d %v", prefix, n, fileType(st.Mode), st.Mode&0o7777, st.Size, x))
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if sub, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
				out = append(out, listDeep(sub, prefix+n+"/")...)
				unix.Close(sub)
			}
		}
	}
	return out
}

func procAt(fd int, name string) string { return fmt.Sprintf("/proc/self/fd/%d/%s", fd, name) }

// readNamesAt reads the names in directory fd, sorted, without . and ..
func readNamesAt(fd int) ([]string, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.ReadDirent(dfd, buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	slices.Sort(names)
	return names, nil
}

func TestLongPaths(t *testing.T) {
	names := deepNames()
	fill := func(l string) {
		fd := openDeep(t, l, names, true)
		defer unix.Close(fd)
		for _, f := range []string{"f", "r", "g"} {
			wfd, err := unix.Openat(fd, f, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			unix.Write(wfd, []byte("lower "+f))
			unix.Close(wfd)
		}
		for _, d := range []string{"s", "s2", "s4"} {
			if err := unix.Mkdirat(fd, d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		wfd, _ := unix.Openat(fd, "s2/x", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		unix.Close(wfd)
		if err := unix.Symlinkat("f", fd, "ln"); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		Errs []string
		List []string
	}
	run := func(_, m string) result {
		fd := openDeep(t, m, names, false)
		defer unix.Close(fd)
		var res result
		buf := make([]byte, 64)
		ops := []struct {
			name string
			op   func() error
		}{
			{"mkdir", func() error { return unix.Mkdirat(fd, "new", 0o750) }},
			{"create", func() error {
				c, err := unix.Openat(fd, "c", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o640)
				if err == nil {
					_, err = unix.Write(c, []byte("created"))
					unix.Close(c)
				}
				return err
			}},
			{"write lower file", func() error {
				c, err := unix.Openat(fd, "g", unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
				if err == nil {
					_, err = unix.Write(c, []byte(" appended"))
					unix.Close(c)
				}
				return err
			}},
			{"unlink lower file", func() error { return unix.Unlinkat(fd, "f", 0) }},
			{"rmdir lower dir", func() error { return unix.Unlinkat(fd, "s", unix.AT_REMOVEDIR) }},
			{"rmdir new dir", func() error {
				if err := unix.Mkdirat(fd, "tmpd", 0o755); err != nil {
					return err
				}
				return unix.Unlinkat(fd, "tmpd", unix.AT_REMOVEDIR)
			}},
			{"rename lower file", func() error { return unix.Renameat(fd, "r", fd, "r2") }},
			{"rename lower dir", func() error { return unix.Renameat(fd, "s2", fd, "s3") }},
			{"link", func() error { return unix.Linkat(fd, "r2", fd, "hl", 0) }},
			{"chmod", func() error { return unix.Fchmodat(fd, "hl", 0o600, 0) }},
			{"chmod dir", func() error { return unix.Fchmodat(fd, "s4", 0o700, 0) }},
			// An absolute redirect here would be longer than the kernel writes.
			{"move lower dir into another dir", func() error { return unix.Renameat(fd, "s4", fd, "new/s4") }},
			{"utimes", func() error {
				ts := []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}
				return unix.UtimesNanoAt(fd, "g", ts, unix.AT_SYMLINK_NOFOLLOW)
			}},
			{"setxattr", func() error { return unix.Lsetxattr(procAt(fd, "r2"), "user.k", []byte("v"), 0) }},
			{"getxattr", func() error {
				n, err := unix.Lgetxattr(procAt(fd, "r2"), "user.k", buf)
				if err == nil && string(buf[:n]) != "v" {
					return fmt.Errorf("getxattr gave %q", buf[:n])
				}
				return err
			}},
			{"removexattr", func() error { return unix.Lremovexattr(procAt(fd, "r2"), "user.k") }},
			{"readlink", func() error {
				n, err := unix.Readlinkat(fd, "ln", buf)
				if err == nil && string(buf[:n]) != "f" {
					return fmt.Errorf("readlink gave %q", buf[:n])
				}
				return err
			}},
			{"symlink", func() error { return unix.Symlinkat("r2", fd, "ln2") }},
			{"mknod fifo", func() error { return unix.Mknodat(fd, "fifo", unix.S_IFIFO|0o644, 0) }},
		}
		for _, o := range ops {
			res.Errs = append(res.Errs, o.name+": "+errOK(o.op()))
		}
		res.List = listDeep(fd, "")
		return res
	}
	for _, opts := range [][]string{{"redirect_dir=off"}, {"redirect_dir=on"}} {
		t.Run(strings.Join(opts, ","), func(t *testing.T) {
			l, u, w := wrLayers(t, fill)
			m := mountOvlfs(t, []string{l}, u, w, opts...)
			ov := run(l, m)
			l2, u2, w2 := wrLayers(t, fill)
			kern := run(l2, mountKernel(t, []string{l2}, u2, w2, opts...))
			if !slices.Equal(ov.Errs, kern.Errs) {
				t.Errorf("results differ:\novlfs:  %v\nkernel: %v", ov.Errs, kern.Errs)
			}
			if !slices.Equal(ov.List, kern.List) {
				t.Errorf("deep directory differs:\novlfs:\n  %s\nkernel:\n  %s", strings.Join(ov.List, "\n  "), strings.Join(kern.List, "\n  "))
			}
			// The upper ovlfs wrote, mounted by the kernel, shows the same tree.
			unmountFuse(t, m)
			fd := openDeep(t, mountKernel(t, []string{l}, u, w, opts...), names, false)
			defer unix.Close(fd)
			if got := listDeep(fd, ""); !slices.Equal(got, kern.List) {
				t.Errorf("ovlfs's upper under the kernel overlay:\n  %s\nkernel's own:\n  %s", strings.Join(got, "\n  "), strings.Join(kern.List, "\n  "))
			}
		})
	}
}
