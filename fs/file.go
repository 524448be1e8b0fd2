package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// fileHandle is an open regular file: an fd on the layer file that holds the data.
type fileHandle struct {
	fd int
}

var (
	_ = (gofs.FileReader)((*fileHandle)(nil))
	_ = (gofs.FileReleaser)((*fileHandle)(nil))
	_ = (gofs.FileLseeker)((*fileHandle)(nil))
)

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(unix.O_WRONLY|unix.O_RDWR|unix.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS // the write path is not done yet (README: limits)
	}
	l, p, errno := n.data()
	if errno != 0 {
		return nil, 0, errno
	}
	fd, err := l.openat2(p, unix.O_RDONLY|int(flags&unix.O_DIRECT))
	if err != nil {
		return nil, 0, toErrno(err)
	}
	// Nothing changes a lower file behind the mount, so the page cache survives
	// across opens.
	return &fileHandle{fd: fd}, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultFd(uintptr(f.fd), off, len(dest)), 0
}

func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	return toErrno(unix.Close(f.fd))
}

func (f *fileHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := unix.Seek(f.fd, int64(off), int(whence))
	return uint64(n), toErrno(err)
}
