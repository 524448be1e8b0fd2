package tests

// Locks and file handles, side by side with the kernel overlay: both are the
// kernel's own business on a kernel overlay (locks live in the overlay's VFS,
// handles are not offered without nfs_export), and ovlfs must answer the same.

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// lockCase is what one lock scenario saw, as comparable strings.
type lockCase map[string]string

func lockType(t int16) string {
	switch t {
	case unix.F_UNLCK:
		return "unlocked"
	case unix.F_RDLCK:
		return "read-locked"
	case unix.F_WRLCK:
		return "write-locked"
	}
	return "type?"
}

func errOK(err error) string {
	if err == nil {
		return "ok"
	}
	return errName(err)
}

// runLocks runs the scenarios on one mount. Every fd is a separate open of
// the same lower file f (each open its own open file description).
func runLocks(t *testing.T, mnt string) lockCase {
	res := lockCase{}
	p := filepath.Join(mnt, "f")
	open := func() *os.File {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		wrMust(t, "open", err)
		t.Cleanup(func() { f.Close() })
		return f
	}
	whole := func(typ int16) *unix.Flock_t { return &unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0} }

	// A process's own POSIX locks never conflict with each other: F_GETLK
	// through another fd of the same process sees no lock.
	f1, f2 := open(), open()
	wrMust(t, "F_SETLK", unix.FcntlFlock(f1.Fd(), unix.F_SETLK, whole(unix.F_WRLCK)))
	lk := whole(unix.F_WRLCK)
	res["F_GETLK own lock, other fd"] = errOK(unix.FcntlFlock(f2.Fd(), unix.F_GETLK, lk)) + " " + lockType(lk.Type)
	res["F_SETLK read, other fd, same process"] = errOK(unix.FcntlFlock(f2.Fd(), unix.F_SETLK, whole(unix.F_RDLCK)))

	// An OFD lock conflicts with the process's POSIX lock.
	f3 := open()
	lk = whole(unix.F_WRLCK)
	res["F_OFD_GETLK vs POSIX lock"] = errOK(unix.FcntlFlock(f3.Fd(), unix.F_OFD_GETLK, lk)) + " " + lockType(lk.Type)
	res["F_OFD_SETLK vs POSIX lock"] = errOK(unix.FcntlFlock(f3.Fd(), unix.F_OFD_SETLK, whole(unix.F_WRLCK)))

	// Closing any fd of the file drops all the process's POSIX locks on it.
	f2.Close()
	lk = whole(unix.F_WRLCK)
	res["F_OFD_GETLK after close of another fd"] = errOK(unix.FcntlFlock(f3.Fd(), unix.F_OFD_GETLK, lk)) + " " + lockType(lk.Type)

	// OFD locks belong to their open file description.
	f4, f5 := open(), open()
	res["F_OFD_SETLK range"] = errOK(unix.FcntlFlock(f4.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Start: 100, Len: 10}))
	lk = &unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 200}
	res["F_OFD_GETLK other description"] = errOK(unix.FcntlFlock(f5.Fd(), unix.F_OFD_GETLK, lk)) + " " + lockType(lk.Type)
	lk = &unix.Flock_t{Type: unix.F_WRLCK, Start: 100, Len: 10}
	res["F_OFD_GETLK same description"] = errOK(unix.FcntlFlock(f4.Fd(), unix.F_OFD_GETLK, lk)) + " " + lockType(lk.Type)

	// flock: per open file description, exclusive against another one.
	f6, f7 := open(), open()
	res["flock EX"] = errOK(unix.Flock(int(f6.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	res["flock EX other description"] = errOK(unix.Flock(int(f7.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	f6.Close()
	res["flock EX after close"] = errOK(unix.Flock(int(f7.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	return res
}

func TestLocks(t *testing.T) {
	fill := func(l string) { writeFile(t, filepath.Join(l, "f"), []byte("lock me"), 0o644) }
	ov, kern := sideBySide(t, fill, func(_, mnt string) lockCase { return runLocks(t, mnt) })
	for k, want := range kern {
		if ov[k] != want {
			t.Errorf("%s: ovlfs %q, kernel overlay %q", k, ov[k], want)
		}
	}
}

// TestFileHandles: the kernel overlay without nfs_export gives no file
// handles (EOPNOTSUPP); ovlfs must not give out handles it cannot open.
func TestFileHandles(t *testing.T) {
	fill := func(l string) {
		writeFile(t, filepath.Join(l, "f"), []byte("x"), 0o644)
		mkdirs(t, filepath.Join(l, "d"))
	}
	ov, kern := sideBySide(t, fill, func(_, mnt string) map[string]string {
		res := map[string]string{}
		for _, name := range []string{"f", "d", "."} {
			_, _, err := unix.NameToHandleAt(unix.AT_FDCWD, filepath.Join(mnt, name), 0)
			res[name] = errOK(err)
		}
		return res
	})
	for k, want := range kern {
		if ov[k] != want {
			t.Errorf("name_to_handle_at(%s): ovlfs %s, kernel overlay %s", k, ov[k], want)
		}
	}
	if kern["f"] == "ok" {
		t.Logf("the kernel overlay gave a handle here (nfs_export on by default?)")
	}
}
