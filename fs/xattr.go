package fs

import (
	"context"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// withEntry runs f on the directory fd holding n's shown entry and its name in
// it ("" when fd is the entry itself: the layer root).
func (n *node) withEntry(f func(dfd int, name string) syscall.Errno) syscall.Errno {
	l, p, errno := n.top()
	if errno != 0 {
		return errno
	}
	if p == "" {
		return f(l.fd, "")
	}
	dir, name := splitPath(p)
	dfd, err := l.openDir(dir)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(dfd)
	return f(dfd, name)
}

// absentXattrs are names the kernel asks about for nearly every file and
// that most files lack: ls -l asks for the SELinux label and the ACLs of
// each, and every write asks for security.capability (the check whether it
// must drop privileges). A node remembers which of them its file lacks, so
// that asking again costs the daemon no system call.
var absentXattrs = [...]string{"security.selinux", "security.capability", "system.posix_acl_access", "system.posix_acl_default"}

// absentIn returns the bits of absentXattrs that the list of xattr names
// lacks.
func absentIn(names []string) uint64 {
	var bits uint64
	for i, a := range absentXattrs {
		if !slices.Contains(names, a) {
			bits |= 1 << i
		}
	}
	return bits
}

func absentBit(attr string) uint64 {
	for i, a := range absentXattrs {
		if a == attr {
			return 1 << i
		}
	}
	return 0
}

// xattrsChanged forgets what n knows about absent xattrs: its file's xattrs
// were changed through the mount, or it is another file now (a copy-up).
// Called after the change, so that a Getxattr that saw the file before it
// cannot record its answer after.
func (n *node) xattrsChanged() {
	for {
		w := n.xattrs.Load()
		if n.xattrs.CompareAndSwap(w, (w>>32+1)<<32) {
			return
		}
	}
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	bit := absentBit(attr)
	known := n.xattrs.Load()
	if known&bit != 0 {
		return 0, syscall.ENODATA
	}
	key, ok := whiteout.Escape(attr, n.root.ns)
	if !ok {
		return 0, syscall.ENODATA
	}
	var v []byte
	errno := n.withEntry(func(dfd int, name string) syscall.Errno {
		var err error
		v, err = getxattrAt(dfd, name, key)
		return toErrno(err)
	})
	switch {
	case errno != 0:
		return 0, errno
	case v == nil:
		if bit != 0 {
			// Unless the xattrs changed meanwhile (then this answer may be
			// older than the change).
			n.xattrs.CompareAndSwap(known, known|bit)
		}
		return 0, syscall.ENODATA
	case len(dest) < len(v):
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var names []string
	errno := n.withEntry(func(dfd int, name string) syscall.Errno {
		var err error
		if name == "" {
			names, err = cow.Flistxattr(dfd)
			return toErrno(err)
		}
		// listxattrat(2) where the kernel has it: no walk through /proc.
		var ok bool
		if names, ok, err = cow.Listxattrat(dfd, name); !ok {
			names, err = cow.Llistxattr(cow.ProcPath(dfd, name))
		}
		return toErrno(err)
	})
	if errno != 0 {
		return 0, errno
	}
	var out []byte
	for _, k := range names {
		if c, ok := whiteout.Unescape(k, n.root.ns); ok {
			out = append(append(out, c...), 0)
		}
	}
	if len(dest) < len(out) {
		return uint32(len(out)), syscall.ERANGE
	}
	return uint32(copy(dest, out)), 0
}
