package layout

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/whiteout"
)

// Diff writes the changes of layer id as an OCI layer tarball (PAX, not
// compressed): kernel whiteouts become `D/.wh.N`, an opaque directory gets a
// `D/.wh..wh..opq` after its own header, overlay metadata is never exported,
// hard links are tar hard links and xattrs are SCHILY.xattr records.
// ApplyDiff of the result reproduces the layer.
func (s *Store) Diff(id string, w io.Writer) error {
	if _, err := s.Layer(id); err != nil {
		return err
	}
	fd, err := openDir(s.fd, id+"/"+diffDirName)
	if err != nil {
		return &os.PathError{Op: "open", Path: s.path(id, diffDirName), Err: err}
	}
	defer unix.Close(fd)
	e := &exporter{tw: tar.NewWriter(w), ns: s.NS, links: map[[2]uint64]string{}, whFiles: s.keepsWhFiles()}
	// A layer that keeps owners and modes in an override xattr has one on
	// its root (the first name found wins, as ovlfs reads it).
	if root, err := xattrsAt(fd, ""); err == nil {
		for _, k := range whiteout.OverrideStatNames {
			if root[k] != nil {
				e.override = k
				break
			}
		}
	}
	if err := e.dir(fd, "", ""); err != nil {
		return err
	}
	return e.tw.Close()
}

type exporter struct {
	tw       *tar.Writer
	ns       whiteout.NS
	override string               // the layer's owner-and-mode override xattr, or ""
	links    map[[2]uint64]string // (dev, ino) of a multiply linked file -> first name
	// whFiles: `.wh.` files are the layer's own whiteouts and opaque
	// markers (Docker's fuse-overlayfs store), exported as they are.
	whFiles bool
}

// dir writes the entry of directory dfd (named name in its parent pfd, path
// rel; rel "" is the root) and everything below it.
func (e *exporter) dir(dfd int, rel, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return err
	}
	xs, err := xattrsAt(dfd, "")
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	hdrName := rel + "/"
	if rel == "" {
		hdrName = "./"
	}
	hdr := e.header(&st, hdrName, tar.TypeDir, xs)
	if err := e.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if whiteout.ClassifyOpaque(xs[e.ns.Key(whiteout.Opaque)]) == whiteout.IsOpaque {
		if err := e.marker(joinRel(rel, whiteout.OpaqueMarker), &st); err != nil {
			return err
		}
	}
	names, err := readNames(dfd, ".")
	if err != nil {
		return &os.PathError{Op: "readdir", Path: rel, Err: err}
	}
	sort.Strings(names)
	for _, n := range names {
		if err := e.entry(dfd, joinRel(rel, n), n); err != nil {
			return err
		}
	}
	return nil
}

// entry writes entry name of dfd, at path rel.
func (e *exporter) entry(dfd int, rel, name string) error {
	st, err := lstatAt(dfd, name)
	if err != nil {
		return &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	if whiteout.IsMarkerName(name) {
		if e.whFiles {
			return e.marker(rel, &st)
		}
		return fmt.Errorf("%s: a .wh. file in a kernel-format layer (ovlctl check --repair)", rel)
	}
	if whiteout.IsWhiteoutStat(&st) {
		return e.marker(joinRel(parentOf(rel), whiteout.MarkerFor(name)), &st)
	}
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFDIR {
		cfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: rel, Err: err}
		}
		defer unix.Close(cfd)
		return e.dir(cfd, rel, name)
	}
	if typ == unix.S_IFSOCK {
		return nil // tar has no sockets; nor does docker's export
	}
	xs, err := xattrsAt(dfd, name)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if typ == unix.S_IFREG && st.Size == 0 && xs[e.ns.Key(whiteout.Whiteout)] != nil {
		return e.marker(joinRel(parentOf(rel), whiteout.MarkerFor(name)), &st) // 6.8+ xattr whiteout
	}
	if xs[e.ns.Key(whiteout.Metacopy)] != nil {
		return fmt.Errorf("%s: a metacopy file (its data is in a lower layer): not supported by diff", rel)
	}
	key := [2]uint64{st.Dev, st.Ino}
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		if first, ok := e.links[key]; ok {
			hdr := e.header(&st, rel, tar.TypeLink, nil)
			hdr.Linkname = first
			hdr.PAXRecords = nil
			return e.tw.WriteHeader(hdr)
		}
		e.links[key] = rel
	}
	switch typ {
	case unix.S_IFREG:
		hdr := e.header(&st, rel, tar.TypeReg, xs)
		hdr.Size = st.Size
		fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: rel, Err: err}
		}
		f := os.NewFile(uintptr(fd), rel)
		defer f.Close()
		if err := e.tw.WriteHeader(hdr); err != nil {
			return err
		}
		if n, err := io.CopyN(e.tw, f, st.Size); err != nil {
			return fmt.Errorf("%s: read %d of %d bytes: %w", rel, n, st.Size, err)
		}
		return nil
	case unix.S_IFLNK:
		target, err := readlinkAt(dfd, name)
		if err != nil {
			return &os.PathError{Op: "readlink", Path: rel, Err: err}
		}
		hdr := e.header(&st, rel, tar.TypeSymlink, xs)
		hdr.Linkname = target
		return e.tw.WriteHeader(hdr)
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		t := map[uint32]byte{unix.S_IFCHR: tar.TypeChar, unix.S_IFBLK: tar.TypeBlock, unix.S_IFIFO: tar.TypeFifo}[typ]
		hdr := e.header(&st, rel, t, xs)
		if typ != unix.S_IFIFO {
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		}
		return e.tw.WriteHeader(hdr)
	}
	return fmt.Errorf("%s: unknown file type %o", rel, typ)
}

// marker writes an empty `.wh.` entry (a whiteout or the opaque marker).
func (e *exporter) marker(rel string, st *unix.Stat_t) error {
	return e.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     rel,
		Mode:     0,
		ModTime:  time.Unix(st.Mtim.Unix()),
		Format:   tar.FormatPAX,
	})
}

// header fills the common fields of a tar header from st and the xattrs xs
// (overlay metadata left out, escaped client xattrs unescaped).
func (e *exporter) header(st *unix.Stat_t, name string, typ byte, xs map[string][]byte) *tar.Header {
	hdr := &tar.Header{
		Typeflag:   typ,
		Name:       name,
		Mode:       int64(st.Mode & 0o7777),
		Uid:        int(st.Uid),
		Gid:        int(st.Gid),
		ModTime:    time.Unix(st.Mtim.Unix()),
		AccessTime: time.Unix(st.Atim.Unix()),
		Format:     tar.FormatPAX,
	}
	if e.override != "" && xs[e.override] != nil {
		// The owner and mode the layer means, not those it could hold.
		if o, err := whiteout.ParseOverrideStat(xs[e.override]); err == nil {
			hdr.Uid, hdr.Gid, hdr.Mode = int(o.Uid), int(o.Gid), int64(o.Mode&0o7777)
		}
	}
	keys := make([]string, 0, len(xs))
	for k := range xs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		client, ok := whiteout.Unescape(k, e.ns)
		if !ok || isOtherNSMetadata(k, e.ns) {
			continue
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+client] = string(xs[k])
	}
	return hdr
}

// isOtherNSMetadata reports whether k is overlay metadata of the other NS
// (a layer made by the kernel with or without userxattr): never exported.
func isOtherNSMetadata(k string, ns whiteout.NS) bool {
	other := whiteout.User
	if ns == whiteout.User {
		other = whiteout.Trusted
	}
	for _, m := range []string{whiteout.Opaque, whiteout.Whiteout, whiteout.Redirect, whiteout.Metacopy,
		whiteout.Origin, whiteout.Impure, whiteout.Nlink, whiteout.Upper, whiteout.UUID, whiteout.Protattr} {
		if k == other.Key(m) {
			return true
		}
	}
	return false
}

func parentOf(rel string) string {
	for i := len(rel) - 1; i >= 0; i-- {
		if rel[i] == '/' {
			return rel[:i]
		}
	}
	return ""
}
