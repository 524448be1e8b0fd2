package fs

import (
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// toErrno is the one place where Go errors become FUSE answers.
func toErrno(err error) syscall.Errno {
	return gofs.ToErrno(err)
}
