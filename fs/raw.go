package fs

import (
	"sync"
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
//
// It also keeps the opens, releases and truncates of each node in turn where
// files are passed through (see openLocks).
type rawFS struct {
	fuse.RawFileSystem
	root      *Root
	noOpendir atomic.Bool
	locks     openLocks
}

func (r *rawFS) Init(s *fuse.Server) {
	r.RawFileSystem.Init(s)
	r.noOpendir.Store(s.KernelSettings().Flags&fuse.CAP_NO_OPENDIR_SUPPORT != 0)
	if s.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		r.root.passthrough.Store(false) // Linux < 6.9
	}
}

// openLocks serialise the requests that change which backing file the kernel
// passes a node's opens through to: OPEN and RELEASE (go-fuse registers the
// backing file after the node's Open returns and drops it after its Release
// returns, and the node's count of passthrough opens must agree with it), and
// truncates (which must not run while an open of the lower file is being
// passed through: retire). A lock exists while a request holds or waits for
// it.
type openLocks struct {
	mu sync.Mutex
	m  map[uint64]*openLock
}

type openLock struct {
	sync.Mutex
	users int
}

func (l *openLocks) lock(id uint64) *openLock {
	l.mu.Lock()
	ol := l.m[id]
	if ol == nil {
		if l.m == nil {
			l.m = map[uint64]*openLock{}
		}
		ol = &openLock{}
		l.m[id] = ol
	}
	ol.users++
	l.mu.Unlock()
	ol.Lock()
	return ol
}

func (l *openLocks) unlock(id uint64, ol *openLock) {
	ol.Unlock()
	l.mu.Lock()
	if ol.users--; ol.users == 0 {
		delete(l.m, id)
	}
	l.mu.Unlock()
}

func (r *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if r.root.passthrough.Load() {
		defer r.locks.unlock(in.NodeId, r.locks.lock(in.NodeId))
	}
	return r.RawFileSystem.Open(cancel, in, out)
}

func (r *rawFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if r.root.passthrough.Load() {
		defer r.locks.unlock(in.NodeId, r.locks.lock(in.NodeId))
	}
	r.RawFileSystem.Release(cancel, in)
}

func (r *rawFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.Valid&fuse.FATTR_SIZE != 0 && r.root.passthrough.Load() {
		defer r.locks.unlock(in.NodeId, r.locks.lock(in.NodeId))
	}
	st := r.RawFileSystem.SetAttr(cancel, in, out)
	uncache(out)
	return st
}

func (r *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	st := r.RawFileSystem.GetAttr(cancel, in, out)
	uncache(out)
	return st
}

// uncache turns the marker timeout node.Getattr sets (uncached) into the
// zero that go-fuse would have replaced by the mount's timeout.
func uncache(out *fuse.AttrOut) {
	if out.AttrValid == 0 && out.AttrValidNsec == uint32(uncached) {
		out.AttrValidNsec = 0
	}
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
