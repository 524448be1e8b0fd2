package cow

import (
	"os"

	"golang.org/x/sys/unix"
)

// SharedWhiteout is the scratch dir's whiteout that new whiteouts are hard
// links of. It stays between mounts, on purpose.
const SharedWhiteout = "whiteout"

// NewWhiteout makes a whiteout (char 0/0) at name in dir, where nothing is.
// Like the kernel overlay's (since Linux 5.8), it is a hard link of one
// shared whiteout inode, which spares an inode allocation per delete (most of
// the cost of deleting a lower tree on ext4); where no link can be made (too
// many links, say) it is a device of its own.
func (s *Scratch) NewWhiteout(dir int, name string) error {
	s.whMu.Lock()
	if !s.haveWh {
		err := unix.Mknodat(s.fd, SharedWhiteout, unix.S_IFCHR, 0)
		s.haveWh = err == nil || err == unix.EEXIST
	}
	have := s.haveWh
	s.whMu.Unlock()
	if have {
		err := unix.Linkat(s.fd, SharedWhiteout, dir, name, 0)
		if err == nil || err == unix.EEXIST {
			return err
		}
		if err == unix.EMLINK {
			// Start another shared whiteout for the next ones.
			s.whMu.Lock()
			if unix.Unlinkat(s.fd, SharedWhiteout, 0) == nil {
				s.haveWh = false
			}
			s.whMu.Unlock()
		}
	}
	return unix.Mknodat(dir, name, unix.S_IFCHR, 0)
}

// Whiteout puts a kernel whiteout (char 0/0) at name in the upper directory dir,
// atomically replacing a non-directory that is there.
func (s *Scratch) Whiteout(dir int, name string) error {
	tmp := s.TempName()
	if err := s.NewWhiteout(s.fd, tmp); err != nil {
		return &os.PathError{Op: "mknod whiteout", Path: name, Err: err}
	}
	if err := unix.Renameat(s.fd, tmp, dir, name); err != nil {
		unix.Unlinkat(s.fd, tmp, 0)
		return &os.PathError{Op: "whiteout", Path: name, Err: err}
	}
	return nil
}

// ReplaceDirWithWhiteout swaps the upper directory name of dir with a new
// whiteout in one step, then removes the old directory (which holds only
// whiteouts) from the scratch dir.
func (s *Scratch) ReplaceDirWithWhiteout(dir int, name string) error {
	tmp := s.TempName()
	if err := s.NewWhiteout(s.fd, tmp); err != nil {
		return &os.PathError{Op: "mknod whiteout", Path: name, Err: err}
	}
	if err := unix.Renameat2(s.fd, tmp, dir, name, unix.RENAME_EXCHANGE); err != nil {
		unix.Unlinkat(s.fd, tmp, 0)
		return &os.PathError{Op: "whiteout", Path: name, Err: err}
	}
	return removeAt(s.fd, tmp)
}

// RemoveDir removes the upper directory name of dir, which holds only whiteouts:
// it is first moved into the scratch dir, so a crash never leaves it half-empty.
func (s *Scratch) RemoveDir(dir int, name string) error {
	tmp := s.TempName()
	if err := unix.Renameat(dir, name, s.fd, tmp); err != nil {
		return &os.PathError{Op: "rmdir", Path: name, Err: err}
	}
	return removeAt(s.fd, tmp)
}

// Place renames the finished object tmp of directory from (the scratch dir or
// one made in it) to name in dir. A whiteout there is replaced (swapped out and
// removed, for a directory); any other existing entry is an error (EEXIST).
func (s *Scratch) Place(from int, tmp string, dir int, name string, overWhiteout, isDir bool) error {
	var err error
	switch {
	case !overWhiteout:
		err = unix.Renameat2(from, tmp, dir, name, unix.RENAME_NOREPLACE)
	case isDir:
		// rename(2) cannot put a directory over a device: swap, then drop the
		// whiteout that landed in the scratch dir.
		if err = unix.Renameat2(from, tmp, dir, name, unix.RENAME_EXCHANGE); err == nil {
			return unix.Unlinkat(from, tmp, 0)
		}
	default:
		err = unix.Renameat(from, tmp, dir, name)
	}
	if err != nil {
		removeAt(from, tmp)
		return &os.PathError{Op: "create", Path: name, Err: err}
	}
	return nil
}

// Discard removes an unfinished object tmp of directory from.
func (s *Scratch) Discard(from int, tmp string) { removeAt(from, tmp) }

// Subdir makes a fresh directory in the scratch dir and opens it; done removes
// it (it must be empty by then).
func (s *Scratch) Subdir() (fd int, done func(), err error) {
	name := s.TempName()
	if err := unix.Mkdirat(s.fd, name, 0o700); err != nil {
		return -1, nil, err
	}
	fd, err = unix.Openat(s.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Unlinkat(s.fd, name, unix.AT_REMOVEDIR)
		return -1, nil, err
	}
	return fd, func() {
		unix.Close(fd)
		removeAt(s.fd, name)
	}, nil
}
