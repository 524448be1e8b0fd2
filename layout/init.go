package layout

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// InitLayer makes a container's layers the way Docker does: `<id>-init` on
// top of parent, holding etc/hosts, etc/hostname, etc/resolv.conf (empty, for
// the runtime to bind-mount over), etc/mtab -> /proc/mounts and the dev/ proc/
// sys/ mount points; then the container layer `<id>` on top of it. It returns
// the container layer's id.
func (s *Store) InitLayer(id, parent string) (string, error) {
	if err := CheckID(id); err != nil {
		return "", err
	}
	unlock, err := s.Lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	if s.Exists(id) {
		return "", fmt.Errorf("layer %s already exists", id)
	}
	initID := id + initSuffix
	if _, err := s.createLocked(initID, parent); err != nil {
		return "", err
	}
	if err := s.fillInit(initID); err != nil {
		s.removeLocked(initID, false)
		return "", err
	}
	if _, err := s.createLocked(id, initID); err != nil {
		s.removeLocked(initID, false)
		return "", err
	}
	return id, nil
}

// fillInit writes the init layer's contents into id's diff/.
func (s *Store) fillInit(id string) error {
	fd, err := openDir(s.fd, id+"/"+diffDirName)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, d := range []string{"dev", "proc", "sys", "etc"} {
		if err := unix.Mkdirat(fd, d, 0o755); err != nil {
			return &os.PathError{Op: "mkdir", Path: s.path(id, diffDirName, d), Err: err}
		}
	}
	for _, f := range []string{"etc/hosts", "etc/hostname", "etc/resolv.conf"} {
		nfd, err := openBeneath(fd, f, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		if err != nil {
			return &os.PathError{Op: "create", Path: s.path(id, diffDirName, f), Err: err}
		}
		unix.Fchmod(nfd, 0o644) // whatever the umask
		unix.Close(nfd)
	}
	if err := unix.Symlinkat("/proc/mounts", fd, "etc/mtab"); err != nil {
		return &os.PathError{Op: "symlink", Path: s.path(id, diffDirName, "etc/mtab"), Err: err}
	}
	return nil
}
