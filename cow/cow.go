// Package cow copies layer entries up into the upper layer and makes the other
// upper-layer objects of the overlay format (whiteouts, opaque directories). Every
// object is built in ovlfs's own scratch directory inside the workdir and renamed
// into place, so that a crash never leaves a half-made object under a real name.
package cow

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/whiteout"
)

// ScratchName is ovlfs's scratch directory inside the workdir. The kernel owns
// workdir/work and workdir/index; this sibling is ours.
const ScratchName = "ovlfs"

// Scratch is the scratch directory, on the same filesystem as the upper layer.
type Scratch struct {
	fd  int
	seq atomic.Uint64
	ns  whiteout.NS
	// whMu guards haveWh: the shared whiteout exists (see NewWhiteout).
	whMu   sync.Mutex
	haveWh bool
}

// OpenScratch opens (making it if needed) ovlfs in the work dir wfd (named
// workdir in messages), locks it for this process and removes what a crashed
// daemon left in it.
func OpenScratch(wfd int, workdir string, ns whiteout.NS) (*Scratch, error) {
	if err := unix.Mkdirat(wfd, ScratchName, 0o700); err != nil && err != unix.EEXIST {
		return nil, &os.PathError{Op: "mkdir", Path: workdir + "/" + ScratchName, Err: err}
	}
	fd, err := unix.Openat(wfd, ScratchName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: workdir + "/" + ScratchName, Err: err}
	}
	// One daemon per work dir (and so per upper): a second one would clean
	// away the first one's objects in the making, and two daemons serving
	// one upper each cache what the other changes. The lock lives as long
	// as the fd, which the daemon holds to its end.
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("workdir %s is in use by another ovlfs mount (one mount per upper and work dir)", workdir)
		}
		return nil, &os.PathError{Op: "lock", Path: workdir + "/" + ScratchName, Err: err}
	}
	s := &Scratch{fd: fd, ns: ns}
	if err := s.clean(); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("clean stale scratch in %s/%s: %w", workdir, ScratchName, err)
	}
	return s, nil
}

// Close releases the scratch directory.
func (s *Scratch) Close() { unix.Close(s.fd) }

// Fd is the scratch directory's fd, for renames into and out of it.
func (s *Scratch) Fd() int { return s.fd }

// TempName returns a fresh name inside the scratch directory.
func (s *Scratch) TempName() string {
	return "#" + strconv.Itoa(os.Getpid()) + "." + strconv.FormatUint(s.seq.Add(1), 10)
}

// clean removes everything in the scratch directory: only unfinished objects of
// an earlier daemon can be there.
func (s *Scratch) clean() error {
	return RemoveAllIn(s.fd)
}

// RemoveAllIn removes every entry of the open directory dfd, recursively, without
// following symlinks.
func RemoveAllIn(dfd int) error {
	names, err := readNames(dfd)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := removeAt(dfd, name); err != nil {
			return err
		}
	}
	return nil
}

func removeAt(dfd int, name string) error {
	err := unix.Unlinkat(dfd, name, 0)
	if err != unix.EISDIR && err != unix.EPERM {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	cfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	err = RemoveAllIn(cfd)
	unix.Close(cfd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return err
	}
	return nil
}

func readNames(dfd int) ([]string, error) {
	fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}
