package fs

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// rawFS answers OPENDIR with ENOSYS where the kernel supports that
// (FUSE_NO_OPENDIR_SUPPORT, Linux 5.1): the kernel then stops sending OPENDIR
// and RELEASEDIR, two round trips for every directory a walk opens, and
// caches every directory's listing (FOPEN_KEEP_CACHE|FOPEN_CACHE_DIR, its
// default without opendir). A READDIR then comes without a handle: it is
// served through a handle opened and released inside the request, which is
// all a handle is for here (each request is served from the directory as it
// is then, from the cookie the reader is at).
type rawFS struct {
	fuse.RawFileSystem
	noOpendir atomic.Bool
}

func (r *rawFS) Init(s *fuse.Server) {
	r.RawFileSystem.Init(s)
	r.noOpendir.Store(s.KernelSettings().Flags&fuse.CAP_NO_OPENDIR_SUPPORT != 0)
}

func (r *rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if r.noOpendir.Load() {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.OpenDir(cancel, in, out)
}

// withDir runs f with in.Fh set to a handle of the directory in.NodeId when
// the kernel sent none.
func (r *rawFS) withDir(cancel <-chan struct{}, hdr *fuse.InHeader, fh *uint64, f func() fuse.Status) fuse.Status {
	if *fh != 0 {
		return f()
	}
	var out fuse.OpenOut
	if st := r.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: *hdr}, &out); !st.Ok() {
		return st
	}
	*fh = out.Fh
	defer r.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: *hdr, Fh: out.Fh})
	return f()
}

func (r *rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.withDir(cancel, &in.InHeader, &in.Fh, func() fuse.Status {
		return r.RawFileSystem.ReadDir(cancel, in, out)
	})
}

func (r *rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.withDir(cancel, &in.InHeader, &in.Fh, func() fuse.Status {
		return r.RawFileSystem.ReadDirPlus(cancel, in, out)
	})
}

func (r *rawFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return r.withDir(cancel, &in.InHeader, &in.Fh, func() fuse.Status {
		return r.RawFileSystem.FsyncDir(cancel, in)
	})
}
