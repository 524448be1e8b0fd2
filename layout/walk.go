package layout

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/whiteout"
)

// pruneWhiteouts walks the layer at root, whose lower layers (nearest first)
// are lowers, and removes whiteouts in directories with nothing below them
// (upper-only or opaque): the kernel lists those as junk. found, when not nil,
// is told each one (path relative to root) and decides whether it goes.
func pruneWhiteouts(root int, lowers []int, ns whiteout.NS, found func(rel string) bool) error {
	stack := make([]int, 0, len(lowers))
	for _, fd := range lowers {
		d, err := unix.Dup(fd)
		if err != nil {
			closeAll(stack)
			return err
		}
		stack = append(stack, d)
	}
	return pruneDir(root, "", stack, ns, found)
}

// pruneDir handles directory dir (path rel) whose merge stack below is stack;
// it closes the stack's fds.
func pruneDir(dir int, rel string, stack []int, ns whiteout.NS, found func(string) bool) error {
	defer closeAll(stack)
	names, err := readNames(dir, ".")
	if err != nil {
		return &os.PathError{Op: "readdir", Path: rel, Err: err}
	}
	for _, name := range names {
		st, err := lstatAt(dir, name)
		if err != nil {
			continue
		}
		p := joinRel(rel, name)
		switch {
		case whiteout.IsWhiteoutStat(&st) && len(stack) == 0:
			if found == nil || found(p) {
				if err := unix.Unlinkat(dir, name, 0); err != nil && err != unix.ENOENT {
					return &os.PathError{Op: "unlink", Path: p, Err: err}
				}
			}
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			cfd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return &os.PathError{Op: "open", Path: p, Err: err}
			}
			var below []int
			if len(stack) > 0 && !isOpaqueAt(dir, name, ns) {
				below = mergeStack(stack, name, ns)
			}
			err = pruneDir(cfd, p, below, ns, found)
			unix.Close(cfd)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// mergeStack opens, in each dir of stack top-down, the directory name, the way
// the kernel's lookup builds a merged directory: a whiteout or a non-directory
// ends it, and so does an opaque directory (after itself).
func mergeStack(stack []int, name string, ns whiteout.NS) []int {
	var out []int
	for _, d := range stack {
		st, err := lstatAt(d, name)
		if err != nil {
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			break
		}
		fd, err := unix.Openat(d, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		out = append(out, fd)
		if isOpaqueAt(d, name, ns) {
			break
		}
	}
	return out
}

func joinRel(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}
