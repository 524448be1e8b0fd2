package fs

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// The kernel overlay keeps its own scratch in WORK/work; a feature that a
// mount must understand before it uses the layers is a non-empty directory
// WORK/work/incompat/FEATURE. The only one the kernel writes is "volatile":
// the upper of a volatile mount may have lost writes, and the kernel refuses
// every later mount until the user removes the mark.
const incompatDir = "work/incompat"

// checkIncompat refuses a work dir that carries an incompat feature.
func checkIncompat(work string) error {
	dir := filepath.Join(work, incompatDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range ents {
		sub, err := os.ReadDir(filepath.Join(dir, e.Name()))
		if err != nil || len(sub) > 0 {
			return fmt.Errorf("workdir %s: marked with incompat feature %q by an earlier mount (the upper may have lost writes; after checking it, remove %s to mount it again)", work, e.Name(), dir)
		}
	}
	return nil
}

// markVolatile writes WORK/work/incompat/volatile/dirty as the kernel's
// volatile mount does (directories and file of mode 0).
func markVolatile(work string) error {
	p := work
	for i, name := range []string{"work", "incompat", "volatile", "dirty"} {
		p = filepath.Join(p, name)
		var err error
		if i < 3 {
			err = unix.Mkdir(p, 0)
		} else {
			var fd int
			fd, err = unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err == nil {
				unix.Close(fd)
			}
		}
		if err != nil && err != unix.EEXIST {
			return &os.PathError{Op: "volatile: mark", Path: p, Err: err}
		}
	}
	return nil
}

// initUUID keeps X(uuid) on the upper root as the kernel's uuid= does: on
// (or auto on a new upper, one whose root is not yet impure) writes a random
// one where there is none; null and off write nothing.
func (r *Root) initUUID() error {
	mode := r.cfg.UUID
	if mode == "null" || mode == "off" || r.upper == nil {
		return nil
	}
	p := cow.ProcPath(r.upper.fd, "")
	key := r.ns.Key(whiteout.UUID)
	if n, err := unix.Getxattr(p, key, nil); err == nil && n > 0 {
		return nil
	} else if err != nil && err != unix.ENODATA {
		return nil // no xattrs here: the kernel falls back to null
	}
	if mode != "on" {
		if n, err := unix.Getxattr(p, r.ns.Key(whiteout.Impure), nil); err == nil && n > 0 {
			return nil // an old overlay: the kernel downgrades to null
		}
	}
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80
	if err := unix.Setxattr(p, key, u[:], 0); err != nil && err != unix.ENOTSUP {
		return &os.PathError{Op: "set " + key, Path: r.upper.path, Err: err}
	}
	return nil
}
