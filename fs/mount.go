package fs

import (
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// MountOptions are the generic FUSE mount settings, apart from the layers.
type MountOptions struct {
	// FsName is the source shown in /proc/mounts (default "ovlfs").
	FsName string
	// AllowOther lets other users use the mount (needs user_allow_other in
	// /etc/fuse.conf when not root).
	AllowOther bool
	// DefaultPermissions lets the kernel check permissions from the modes.
	DefaultPermissions bool
	// Debug prints a trace of every FUSE request on stderr.
	Debug bool
	// Options are generic mount options passed to the kernel as they are
	// (ro, nodev, nosuid, noexec, noatime, context=...).
	Options []string
}

// Mount opens the layers of cfg and serves the merged tree at mountpoint. It
// returns once the mount is live; the caller waits on the server (Wait) and
// unmounts it (Unmount).
func Mount(mountpoint string, cfg Config, mo MountOptions) (*fuse.Server, error) {
	// The kernel has applied the client's umask to every mode it sends; the
	// daemon's own must not cut it again (objects are made with those modes).
	unix.Umask(0)
	root, err := NewRoot(cfg)
	if err != nil {
		return nil, err
	}
	opts := root.options(mo)
	raw := &rawFS{RawFileSystem: gofs.NewNodeFS(root, opts), root: root}
	srv, err := fuse.NewServer(raw, mountpoint, &opts.MountOptions)
	if err != nil {
		root.Close()
		return nil, err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		// As in go-fuse's Mount: the serve loop ends by itself.
		root.Close()
		return nil, err
	}
	return srv, nil
}
