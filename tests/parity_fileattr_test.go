package tests

// Inode flags (lsattr, chattr) through the merged view: FS_IOC_GETFLAGS,
// SETFLAGS, FSGETXATTR and FSSETXATTR give what the kernel overlay gives,
// the append-only and immutable flags forbid what they forbid there, and a
// change writes the upper the kernel writes (X(protattr), flags copied up).

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	flImmutable = 0x10
	flAppend    = 0x20
	flNodump    = 0x40
	flNoatime   = 0x80
	iocGetFlags = 0x80086601
	iocSetFlags = 0x40086602
	iocFsGetX   = 0x801c581f
	iocFsSetX   = 0x401c5820
	xflImmut    = 0x8
	xflDax      = 0x8000
)

func openFlagsFd(p string) (int, error) {
	return unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

func getFlags(p string) (uint32, error) {
	fd, err := openFlagsFd(p)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.IoctlGetUint32(fd, iocGetFlags)
}

func setFlags(p string, f uint32) error {
	fd, err := openFlagsFd(p)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.IoctlSetPointerInt(fd, iocSetFlags, int(f))
}

// fsxattr runs FS_IOC_FSGETXATTR on p, and with set FS_IOC_FSSETXATTR
// with set(xflags) after it; it returns the xflags read.
func fsxattr(p string, set func(uint32) uint32) (uint32, error) {
	fd, err := openFlagsFd(p)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var buf [28]byte
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocFsGetX, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return 0, e
	}
	x := binary.NativeEndian.Uint32(buf[:])
	if set != nil {
		binary.NativeEndian.PutUint32(buf[:], set(x))
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), iocFsSetX, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
			return x, e
		}
	}
	return x, nil
}

// clearProtFlags takes append-only and immutable off everything under
// root, so that the test's temp dirs can be removed.
func clearProtFlags(root string) {
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && (d.IsDir() || d.Type().IsRegular()) {
			if f, err := getFlags(p); err == nil && f&(flImmutable|flAppend) != 0 {
				setFlags(p, f&^(flImmutable|flAppend))
			}
		}
		return nil
	})
}

// flagsState lists every regular file and directory under root with its
// inode flags and its overlay protattr xattr.
func flagsState(root string) []string {
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !(d.IsDir() || d.Type().IsRegular()) {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		f, ferr := getFlags(p)
		prot, _ := getXattr(p, "trusted.overlay.protattr")
		out = append(out, fmt.Sprintf("%s flags=%#x(%v) protattr=%q", rel, f, errOK(ferr), prot))
		return nil
	})
	return out
}

func TestFileFlags(t *testing.T) {
	fill := func(l string) {
		t.Cleanup(func() { clearProtFlags(filepath.Dir(l)) })
		for _, f := range []string{"f", "g", "h", "k"} {
			writeFile(t, filepath.Join(l, f), []byte("lower "+f), 0o644)
		}
		for _, d := range []string{"d", "di", "da"} {
			mkdirs(t, filepath.Join(l, d))
			writeFile(t, filepath.Join(l, d, "x"), []byte("x"), 0o644)
		}
		for p, f := range map[string]uint32{"f": flNoatime, "g": flImmutable, "h": flAppend, "di": flImmutable, "da": flAppend} {
			cur, err := getFlags(filepath.Join(l, p))
			if err == nil {
				err = setFlags(filepath.Join(l, p), cur|f)
			}
			if err != nil {
				t.Skipf("the filesystem of the test dir keeps no inode flags: %v", err)
			}
		}
	}
	type result struct{ Ops, Upper []string }
	run := func(l, m string) result {
		var r result
		at := func(n string) string { return filepath.Join(m, n) }
		flags := func(n string) string {
			f, err := getFlags(at(n))
			return fmt.Sprintf("%#x %s", f, errOK(err))
		}
		write := func(n string, fl int) error {
			fd, err := unix.Open(at(n), fl|unix.O_CLOEXEC, 0)
			if err == nil {
				_, err = unix.Write(fd, []byte("+"))
				unix.Close(fd)
			}
			return err
		}
		ops := []struct {
			name string
			op   func() string
		}{
			{"lsattr", func() string {
				var s []string
				for _, n := range []string{"f", "g", "h", "k", "d", "di", "da", "di/x"} {
					s = append(s, n+"="+flags(n))
				}
				return strings.Join(s, " ")
			}},
			{"fsgetxattr g h", func() string {
				g, e1 := fsxattr(at("g"), nil)
				h, e2 := fsxattr(at("h"), nil)
				return fmt.Sprintf("%#x %s %#x %s", g, errOK(e1), h, errOK(e2))
			}},
			{"write immutable", func() string { return errOK(write("g", unix.O_WRONLY)) }},
			{"append immutable", func() string { return errOK(write("g", unix.O_WRONLY|unix.O_APPEND)) }},
			{"chmod immutable", func() string { return errOK(unix.Chmod(at("g"), 0o600)) }},
			{"touch immutable", func() string { return errOK(unix.UtimesNano(at("g"), nil)) }},
			{"unlink immutable", func() string { return errOK(unix.Unlink(at("g"))) }},
			{"rename immutable", func() string { return errOK(unix.Rename(at("g"), at("g2"))) }},
			{"link immutable", func() string { return errOK(unix.Link(at("g"), at("g3"))) }},
			{"setxattr immutable", func() string { return errOK(unix.Setxattr(at("g"), "user.k", []byte("v"), 0)) }},
			{"append to append-only", func() string { return errOK(write("h", unix.O_WRONLY|unix.O_APPEND)) }},
			{"write append-only", func() string { return errOK(write("h", unix.O_WRONLY)) }},
			{"truncate append-only", func() string { return errOK(unix.Truncate(at("h"), 0)) }},
			{"chmod append-only", func() string { return errOK(unix.Chmod(at("h"), 0o600)) }},
			{"touch append-only", func() string { return errOK(unix.UtimesNano(at("h"), nil)) }},
			{"unlink append-only", func() string { return errOK(unix.Unlink(at("h"))) }},
			{"create in immutable dir", func() string { return errOK(os.WriteFile(at("di/new"), nil, 0o644)) }},
			{"mkdir in immutable dir", func() string { return errOK(unix.Mkdir(at("di/nd"), 0o755)) }},
			{"unlink in immutable dir", func() string { return errOK(unix.Unlink(at("di/x"))) }},
			{"write in immutable dir", func() string { return errOK(write("di/x", unix.O_WRONLY)) }},
			{"create in append-only dir", func() string { return errOK(os.WriteFile(at("da/new"), nil, 0o644)) }},
			{"unlink in append-only dir", func() string { return errOK(unix.Unlink(at("da/x"))) }},
			{"rename into immutable dir", func() string { return errOK(unix.Rename(at("k"), at("di/k"))) }},
			{"chattr +a", func() string {
				f, err := getFlags(at("f"))
				if err == nil {
					err = setFlags(at("f"), f|flAppend)
				}
				return errOK(err) + " " + flags("f")
			}},
			{"write after chattr +a", func() string { return errOK(write("f", unix.O_WRONLY)) }},
			{"append after chattr +a", func() string { return errOK(write("f", unix.O_WRONLY|unix.O_APPEND)) }},
			{"chattr +d dir", func() string {
				f, err := getFlags(at("d"))
				if err == nil {
					err = setFlags(at("d"), f|flNodump)
				}
				return errOK(err) + " " + flags("d")
			}},
			{"chattr -i", func() string {
				f, err := getFlags(at("g"))
				if err == nil {
					err = setFlags(at("g"), f&^flImmutable)
				}
				return errOK(err) + " " + flags("g")
			}},
			{"ctime after chattr", func() string {
				var a, b unix.Stat_t
				unix.Stat(at("k"), &a)
				time.Sleep(10 * time.Millisecond)
				f, err := getFlags(at("k"))
				if err == nil {
					err = setFlags(at("k"), f|flNodump)
				}
				unix.Stat(at("k"), &b)
				return fmt.Sprintf("%s moved=%v", errOK(err), a.Ctim != b.Ctim)
			}},
			{"write after chattr -i", func() string { return errOK(write("g", unix.O_WRONLY)) }},
			{"fssetxattr immutable dir", func() string {
				_, err := fsxattr(at("d"), func(x uint32) uint32 { return x | xflImmut })
				return errOK(err) + " " + flags("d")
			}},
			{"create in dir made immutable", func() string { return errOK(os.WriteFile(at("d/new"), nil, 0o644)) }},
			{"fssetxattr clears it", func() string {
				_, err := fsxattr(at("d"), func(x uint32) uint32 { return x &^ xflImmut })
				return errOK(err) + " " + flags("d")
			}},
			{"create after clearing", func() string { return errOK(os.WriteFile(at("d/new"), nil, 0o644)) }},
			{"copy_file_range, fallocate into a file made immutable while open", func() string {
				w, err := os.OpenFile(at("d/x"), os.O_RDWR, 0)
				if err != nil {
					return errOK(err)
				}
				defer w.Close()
				r, err := os.Open(at("k"))
				if err != nil {
					return errOK(err)
				}
				defer r.Close()
				f, err := getFlags(at("d/x"))
				if err == nil {
					err = setFlags(at("d/x"), f|flImmutable)
				}
				_, cerr := unix.CopyFileRange(int(r.Fd()), nil, int(w.Fd()), nil, 4, 0)
				ferr := unix.Fallocate(int(w.Fd()), 0, 0, 8192)
				f, _ = getFlags(at("d/x"))
				setFlags(at("d/x"), f&^flImmutable)
				return errOK(err) + " copy_file_range " + errOK(cerr) + " fallocate " + errOK(ferr)
			}},
			{"flags a new dir inherits", func() string {
				_, err := fsxattr(at("d"), func(x uint32) uint32 { return x | xflDax })
				merr := unix.Mkdir(at("d/nd"), 0o755)
				x, xerr := fsxattr(at("d/nd"), nil)
				_, cerr := fsxattr(at("d"), func(x uint32) uint32 { return x &^ xflDax })
				return fmt.Sprintf("%s mkdir %s %s dax=%v nodump: %s, clear %s", errOK(err), errOK(merr), errOK(xerr), x&xflDax != 0, flags("d/nd"), errOK(cerr))
			}},
			{"lsattr after", func() string {
				var s []string
				for _, n := range []string{"f", "g", "h", "d", "di", "da"} {
					s = append(s, n+"="+flags(n))
				}
				return strings.Join(s, " ")
			}},
		}
		for _, o := range ops {
			r.Ops = append(r.Ops, o.name+": "+o.op())
		}
		return r
	}
	l, u, w := wrLayers(t, fill)
	m := mountOvlfs(t, []string{l}, u, w)
	ov := run(l, m)
	ov.Upper = flagsState(u)
	l2, u2, w2 := wrLayers(t, fill)
	km := mountKernel(t, []string{l2}, u2, w2)
	kern := run(l2, km)
	kern.Upper = flagsState(u2)
	for i := range max(len(ov.Ops), len(kern.Ops)) {
		if i >= len(ov.Ops) || i >= len(kern.Ops) || ov.Ops[i] != kern.Ops[i] {
			t.Errorf("ovlfs:  %s\nkernel: %s", at(ov.Ops, i), at(kern.Ops, i))
		}
	}
	if !slices.Equal(ov.Upper, kern.Upper) {
		t.Errorf("upper differs:\novlfs:\n  %s\nkernel:\n  %s", strings.Join(ov.Upper, "\n  "), strings.Join(kern.Upper, "\n  "))
	}
	// ovlfs's upper under the kernel overlay shows the same flags.
	unmountFuse(t, m)
	again := mountKernel(t, []string{l}, u, w)
	for _, n := range []string{"f", "g", "h", "d"} {
		a, e1 := getFlags(filepath.Join(again, n))
		b, e2 := getFlags(filepath.Join(km, n))
		if a != b || errOK(e1) != errOK(e2) {
			t.Errorf("%s under the kernel: %#x %v on ovlfs's upper, %#x %v on its own", n, a, errOK(e1), b, errOK(e2))
		}
	}
}

func at(l []string, i int) string {
	if i < len(l) {
		return l[i]
	}
	return "(none)"
}
