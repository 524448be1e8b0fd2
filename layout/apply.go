package layout

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// Decompress returns the uncompressed stream of r, which may be a plain tar or
// gzip, zstd or bzip2 compressed (told apart by their magic numbers).
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(6)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read layer: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	case bytes.HasPrefix(magic, []byte("BZh")):
		return io.NopCloser(bzip2.NewReader(br)), nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return nil, errors.New("xz-compressed layers are not supported (decompress with xz -d first)")
	}
	return io.NopCloser(br), nil
}

// Applied is what ApplyDiff read.
type Applied struct {
	// DiffID is the digest of the uncompressed tarball ("sha256:...").
	DiffID string
	// Size is the number of uncompressed bytes.
	Size int64
	// Overrides counts the entries whose owner and mode an unprivileged
	// caller keeps in user.containers.override_stat.
	Overrides int
	// Unkept names the entries whose owner could not be kept (symlinks and
	// fifos of another owner, applied without privilege): they are the
	// caller's.
	Unkept []string
}

// ApplyDiff extracts the OCI/Docker layer tarball r (plain, gzip or zstd) into
// the empty layer id, converting `.wh.` markers to the kernel format. It is
// extracted into a scratch dir beside diff/ and swapped in whole at the end, so
// a refused or broken tarball leaves the layer as it was.
func (s *Store) ApplyDiff(id string, r io.Reader) (*Applied, error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.applyLocked(id, r)
}

// Preconditions: the store lock is held.
func (s *Store) applyLocked(id string, r io.Reader) (*Applied, error) {
	l, err := s.Layer(id)
	if err != nil {
		return nil, err
	}
	if l.Mounted {
		return nil, fmt.Errorf("layer %s is mounted at %s: umount it first", id, l.MountPoint)
	}
	if names, err := readNames(s.fd, id+"/"+diffDirName); err != nil {
		return nil, err
	} else if len(names) > 0 {
		return nil, fmt.Errorf("layer %s is not empty: apply into a new layer (ovlctl create --parent %s)", id, id)
	}
	lfd, err := openDir(s.fd, id)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: s.path(id), Err: err}
	}
	defer unix.Close(lfd)
	tmp := applyPrefix + randomHex(6)
	if err := unix.Mkdirat(lfd, tmp, 0o700); err != nil {
		return nil, &os.PathError{Op: "mkdir", Path: s.path(id, tmp), Err: err}
	}
	done := false
	defer func() {
		if !done {
			s.removeTree(id + "/" + tmp)
		}
	}()
	tfd, err := openDir(lfd, tmp)
	if err != nil {
		return nil, err
	}
	defer unix.Close(tfd)
	lowers, err := s.lowerFds(l)
	if err != nil {
		return nil, err
	}
	defer closeAll(lowers)

	zr, err := Decompress(r)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	h := sha256.New()
	cr := &countingReader{r: io.TeeReader(zr, h)}
	x := &extractor{root: tfd, ns: s.NS, rootless: os.Geteuid() != 0, dirs: map[string]*dirMeta{}, implicit: map[string]bool{".": true}}
	err = x.extract(tar.NewReader(cr))
	if err == nil {
		_, err = io.Copy(io.Discard, cr) // the tar's trailing padding
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		if x.last == "" {
			return nil, errors.New("the layer tarball is truncated (it ends before its first entry)")
		}
		return nil, fmt.Errorf("the layer tarball is truncated (it ends inside %s)", x.last)
	}
	if err != nil {
		return nil, err
	}
	if err := pruneWhiteouts(tfd, lowers, s.NS, nil); err != nil {
		return nil, err
	}
	if err := x.finish(); err != nil {
		return nil, err
	}
	// The swap is the only moment the layer changes.
	if err := unix.Renameat2(lfd, tmp, lfd, diffDirName, unix.RENAME_EXCHANGE); err != nil {
		return nil, &os.PathError{Op: "rename", Path: s.path(id, diffDirName), Err: err}
	}
	done = true
	unix.Unlinkat(lfd, tmp, unix.AT_REMOVEDIR) // the old, empty diff/
	if len(x.unkept) > 0 && s.Warn != nil {
		ex := x.unkept
		if len(ex) > 3 {
			ex = append(ex[:3:3], "...")
		}
		s.Warn(fmt.Sprintf("layer %s: %d entries of another owner keep yours (%s): without privilege only files and directories can keep an owner (in %s), symlinks and fifos cannot",
			id, len(x.unkept), strings.Join(ex, ", "), whiteout.OverrideStatContainers))
	}
	return &Applied{DiffID: digestOf(h), Size: cr.n, Overrides: x.overrides, Unkept: x.unkept}, nil
}

func digestOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// lowerFds opens the lower layers of l, nearest first.
func (s *Store) lowerFds(l *Layer) ([]int, error) {
	var fds []int
	for _, lid := range l.Lower {
		// l/<LID> is the store's own link to ../<id>/diff: followed on purpose.
		fd, err := unix.Openat(s.fd, linkDir+"/"+lid, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("lower l/%s of layer %s: %w (ovlctl check --repair)", lid, l.ID, err)
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// ErrRefused wraps every reason a tarball is refused.
var ErrRefused = errors.New("refused")

func refuse(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, a...))
}

// cleanName splits a tar entry name into its components, refusing absolute
// paths, "..", and marker names in the middle of a path. "./x" and "x/" are
// fine; the root itself gives no components.
func cleanName(name string) ([]string, error) {
	if strings.HasPrefix(name, "/") {
		return nil, refuse("%q: absolute path", name)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return nil, refuse("%q: NUL in name", name)
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return nil, refuse("%q: \"..\" in path", name)
		}
		if len(p) > 255 {
			return nil, refuse("%q: name longer than 255 bytes", name)
		}
		parts = append(parts, p)
	}
	for _, p := range parts[:max(len(parts)-1, 0)] {
		if whiteout.IsMarkerName(p) {
			return nil, refuse("%q: %q is a whiteout name, not a directory", name, p)
		}
	}
	return parts, nil
}

// symlinkEscapes reports whether the symlink target, written at the path of
// components parts, climbs above the layer's root. Absolute targets are rooted
// at the layer's root (as in a container) and escape only through "..".
func symlinkEscapes(parts []string, target string) bool {
	depth := len(parts) - 1
	if strings.HasPrefix(target, "/") {
		depth = 0
	}
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// extractor writes tar entries below root, a scratch dir no one else sees.
type extractor struct {
	root     int
	ns       whiteout.NS
	rootless bool
	// dirs holds each directory's mode and times (its last entry's), set
	// last: a directory may be made read-only while files are still to come.
	dirs map[string]*dirMeta
	// implicit are the directories made for an entry below them, without an
	// entry of their own (yet): 0755, as Docker and containers/storage make
	// them; "." is the root.
	implicit map[string]bool
	// overrides counts the entries whose owner or mode is kept in the
	// override xattr (rootless); unkept lists those whose owner could not be
	// kept at all (no xattr on symlinks and fifos).
	overrides int
	unkept    []string
	last      string // the name of the entry being read
}

type dirMeta struct {
	parts        []string
	mode         uint32 // the real mode to give it
	atime, mtime unix.Timespec
}

func joinParts(p []string) string {
	if len(p) == 0 {
		return "."
	}
	return strings.Join(p, "/")
}

func (x *extractor) extract(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		x.last = hdr.Name
		if err := x.entry(tr, hdr); err != nil {
			return err
		}
	}
}

// entry writes one tar entry.
func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	parts, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		if hdr.Typeflag != tar.TypeDir {
			return refuse("%q: the root is not a directory", hdr.Name)
		}
		return x.meta(x.root, ".", []string{}, hdr)
	}
	base := parts[len(parts)-1]
	dir, err := x.ensureDir(parts[:len(parts)-1])
	if err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	defer unix.Close(dir)
	switch {
	case base == whiteout.OpaqueMarker:
		if err := setXattrAt(dir, "", x.ns.Key(whiteout.Opaque), []byte("y")); err != nil {
			return fmt.Errorf("%s: set opaque: %w", hdr.Name, err)
		}
		return nil
	case strings.HasPrefix(base, whiteout.WhPrefix+whiteout.WhPrefix):
		return nil // other AUFS meta markers (.wh..wh.plnk, ...): nothing in overlay
	case whiteout.IsMarkerName(base):
		hidden := whiteout.HiddenBy(base)
		if hidden == "" || hidden == "." || hidden == ".." {
			return refuse("%q: invalid whiteout name", hdr.Name)
		}
		if _, err := lstatAt(dir, hidden); err == nil {
			return nil // a whiteout never hides a name of its own layer
		}
		if err := unix.Mknodat(dir, hidden, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("%s: whiteout: %w", hdr.Name, err)
		}
		ts := timespec(hdr.ModTime)
		unix.UtimesNanoAt(dir, hidden, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
		return nil
	}
	// A later entry replaces an earlier one, except a directory over a directory.
	if st, err := lstatAt(dir, base); err == nil {
		if hdr.Typeflag == tar.TypeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return x.meta(dir, base, parts, hdr)
		}
		if err := removeEntry(dir, base); err != nil {
			return fmt.Errorf("%s: replace: %w", hdr.Name, err)
		}
	}
	if err := x.create(tr, hdr, dir, base, parts); err != nil {
		if errors.Is(err, ErrRefused) {
			return err
		}
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	if hdr.Typeflag == tar.TypeLink {
		return nil // the same inode as its target: no metadata of its own
	}
	return x.meta(dir, base, parts, hdr)
}

func removeEntry(dir int, name string) error {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		err = cow.RemoveAllIn(fd)
		unix.Close(fd)
		if err != nil {
			return err
		}
		return unix.Unlinkat(dir, name, unix.AT_REMOVEDIR)
	}
	return unix.Unlinkat(dir, name, 0)
}

// create makes the object of hdr as base in dir.
func (x *extractor) create(tr *tar.Reader, hdr *tar.Header, dir int, base string, parts []string) error {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		fd, err := unix.Openat(dir, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), base)
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	case tar.TypeDir:
		return unix.Mkdirat(dir, base, 0o700)
	case tar.TypeSymlink:
		if symlinkEscapes(parts, hdr.Linkname) {
			return refuse("%q: symlink to %q leaves the layer", hdr.Name, hdr.Linkname)
		}
		return unix.Symlinkat(hdr.Linkname, dir, base)
	case tar.TypeLink:
		tparts, err := cleanName(hdr.Linkname)
		if err != nil || len(tparts) == 0 {
			return refuse("%q: hard link to %q leaves the layer", hdr.Name, hdr.Linkname)
		}
		tdir, err := openDir(x.root, joinParts(tparts[:len(tparts)-1]))
		if err != nil {
			return refuse("%q: hard link to %q: %v", hdr.Name, hdr.Linkname, err)
		}
		defer unix.Close(tdir)
		tbase := tparts[len(tparts)-1]
		st, err := lstatAt(tdir, tbase)
		if err != nil || st.Mode&unix.S_IFMT == unix.S_IFDIR || whiteout.IsWhiteoutStat(&st) {
			return refuse("%q: hard link to %q: no such file earlier in the layer", hdr.Name, hdr.Linkname)
		}
		return unix.Linkat(tdir, tbase, dir, base, 0)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		if hdr.Typeflag == tar.TypeChar {
			mode = unix.S_IFCHR
		} else if hdr.Typeflag == tar.TypeBlock {
			mode = unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		err := unix.Mknodat(dir, base, mode|0o600, int(dev))
		if err == unix.EPERM && mode != unix.S_IFIFO {
			return refuse("%q: device node %d:%d: this process may not make device nodes", hdr.Name, hdr.Devmajor, hdr.Devminor)
		}
		return err
	}
	return refuse("%q: unsupported tar entry type %q", hdr.Name, hdr.Typeflag)
}

// meta sets owner, mode, xattrs and times of base in dir from hdr. An
// owner that this (unprivileged) process cannot give is kept, with the mode,
// in the override xattr containers/storage writes (user.containers.override_stat,
// which ovlfs shows and diff exports), and the file stays the caller's, with
// its owner bits set and no set-ID bits.
func (x *extractor) meta(dir int, base string, parts []string, hdr *tar.Header) error {
	name := base
	if name == "." {
		name = ""
	}
	delete(x.implicit, joinParts(parts))
	mode := uint32(hdr.Mode) & 0o7777
	typ := tarType(hdr.Typeflag)
	override := false
	if err := unix.Fchownat(dir, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH); err != nil {
		if !(x.rootless && (err == unix.EPERM || err == unix.EINVAL)) {
			return fmt.Errorf("%s: chown: %w", hdr.Name, err)
		}
		if whiteout.OverrideFits(typ) {
			override = true
		} else {
			x.unkept = append(x.unkept, hdr.Name)
		}
	}
	realMode := mode
	if override {
		realMode = cow.BackingPerm(mode, typ)
	}
	if hdr.Typeflag != tar.TypeSymlink && hdr.Typeflag != tar.TypeDir {
		if err := unix.Chmod(cow.ProcPath(dir, name), realMode); err != nil {
			return fmt.Errorf("%s: chmod: %w", hdr.Name, err)
		}
	}
	if err := x.xattrs(dir, name, hdr); err != nil {
		return err
	}
	if override {
		v := overrideValue(hdr.Uid, hdr.Gid, mode, typ)
		if err := setXattrAt(dir, name, whiteout.OverrideStatContainers, v); err != nil {
			return fmt.Errorf("%s: keep owner %d:%d in %s: %w", hdr.Name, hdr.Uid, hdr.Gid, whiteout.OverrideStatContainers, err)
		}
		x.overrides++
	} else if x.rootless && whiteout.OverrideFits(typ) {
		// A later entry of the same directory may have been kept in one.
		removeXattrAt(dir, name, whiteout.OverrideStatContainers)
	}
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	ts := []unix.Timespec{timespec(at), timespec(hdr.ModTime)}
	if hdr.Typeflag == tar.TypeDir {
		x.dirs[joinParts(parts)] = &dirMeta{parts: parts, mode: realMode, atime: ts[0], mtime: ts[1]}
		return nil
	}
	if err := unix.UtimesNanoAt(dir, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: set times: %w", hdr.Name, err)
	}
	return nil
}

// tarType is the file type bits of a tar entry type.
func tarType(t byte) uint32 {
	switch t {
	case tar.TypeDir:
		return unix.S_IFDIR
	case tar.TypeSymlink:
		return unix.S_IFLNK
	case tar.TypeChar:
		return unix.S_IFCHR
	case tar.TypeBlock:
		return unix.S_IFBLK
	case tar.TypeFifo:
		return unix.S_IFIFO
	}
	return unix.S_IFREG
}

// overrideValue is user.containers.override_stat's value as containers/storage
// writes it: "UID:GID:MODE:TYPE", MODE four octal digits with the set-ID
// and sticky bits.
func overrideValue(uid, gid int, mode, typ uint32) []byte {
	t := "file"
	if typ == unix.S_IFDIR {
		t = "dir"
	}
	return []byte(fmt.Sprintf("%d:%d:%04o:%s", uid, gid, mode&0o7777, t))
}

// xattrs writes the PAX SCHILY.xattr.* records of hdr, escaped so that a
// tarball can never forge overlay metadata.
func (x *extractor) xattrs(dir int, name string, hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		key, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		disk, ok := whiteout.Escape(key, x.ns)
		if !ok {
			continue // user.fuseoverlayfs.*: another tool's private state
		}
		err := setXattrAt(dir, name, disk, []byte(v))
		if err == nil {
			continue
		}
		if err == unix.EPERM && (hdr.Typeflag == tar.TypeSymlink || x.rootless) {
			continue // user.* on symlinks, trusted.* without privilege: impossible here
		}
		return fmt.Errorf("%s: setxattr %s: %w", hdr.Name, disk, err)
	}
	return nil
}

// finish gives the directories their modes and times, deepest first, once
// nothing more is written below them. A layer that keeps owners in
// overrides gets one on its root, where ovlfs looks for it (fuse-overlayfs and
// containers/storage do the same), and the directories made without an
// entry get root's 0755 there too.
func (x *extractor) finish() error {
	if x.overrides > 0 {
		for rel := range x.implicit {
			fd, err := openDir(x.root, rel)
			if err != nil {
				continue // replaced by a later entry
			}
			err = unix.Fsetxattr(fd, whiteout.OverrideStatContainers, overrideValue(0, 0, 0o755, unix.S_IFDIR), 0)
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("%s: keep owner in %s: %w", rel, whiteout.OverrideStatContainers, err)
			}
		}
	}
	if x.implicit["."] {
		// A layer root without an entry of its own.
		if err := unix.Fchmod(x.root, 0o755); err != nil {
			return fmt.Errorf("layer root: chmod: %w", err)
		}
	}
	keys := make([]string, 0, len(x.dirs))
	for k := range x.dirs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if a, b := len(x.dirs[keys[i]].parts), len(x.dirs[keys[j]].parts); a != b {
			return a > b
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		d := x.dirs[k]
		fd, err := openDir(x.root, joinParts(d.parts))
		if err != nil {
			continue // replaced by a later entry
		}
		err = unix.Fchmod(fd, d.mode)
		if err == nil {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, cow.ProcPath(fd, ""), []unix.Timespec{d.atime, d.mtime}, 0)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("%s: %w", joinParts(d.parts), err)
		}
	}
	return nil
}

// ensureDir opens the directory of components parts below root, making the
// missing ones (0755). A whiteout in the way becomes a directory; a symlink or
// a file in the way is refused: nothing is ever written through a symlink.
func (x *extractor) ensureDir(parts []string) (int, error) {
	fd, err := unix.Dup(x.root)
	if err != nil {
		return -1, err
	}
	for i, p := range parts {
		next, err := unix.Openat(fd, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT || err == unix.ENOTDIR {
			st, serr := lstatAt(fd, p)
			switch {
			case serr == nil && whiteout.IsWhiteoutStat(&st):
				unix.Unlinkat(fd, p, 0)
			case serr == nil:
				unix.Close(fd)
				if st.Mode&unix.S_IFMT == unix.S_IFLNK {
					return -1, refuse("%s: path goes through symlink %s", joinParts(parts), p)
				}
				return -1, refuse("%s: %s is not a directory", joinParts(parts), p)
			}
			if err := unix.Mkdirat(fd, p, 0o755); err != nil && err != unix.EEXIST {
				unix.Close(fd)
				return -1, err
			}
			unix.Fchmodat(fd, p, 0o755, 0) // whatever the umask
			x.implicit[joinParts(parts[:i+1])] = true
			next, err = unix.Openat(fd, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		unix.Close(fd)
		if err == unix.ELOOP {
			return -1, refuse("%s: path goes through symlink %s", joinParts(parts), p)
		}
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

func timespec(t interface{ UnixNano() int64 }) unix.Timespec {
	return unix.NsecToTimespec(t.UnixNano())
}
