// Package layout manages a layer store in the Docker overlay2 layout
// (docs/format.md, "Layer stores and tarballs"): layers with diff/, link, lower,
// work/ and merged/, short l/ links, and the OCI/Docker layer tarballs that fill
// and export them. A store written here is readable by Docker's overlay2
// conventions, and a copy of a Docker or containers/storage overlay store is
// usable here.
//
// The on-disk names are the constants below; each public operation of Store
// (Create, Get, Put, Remove, ApplyDiff, Diff) is a short function over them.
// Layer contents are touched only through directory fds and *at calls that
// never follow a symlink inside a layer.
package layout

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// On-disk names of the overlay2 layout.
const (
	linkDir       = "l"         // ROOT/l/<LID> -> ../<id>/diff
	diffDirName   = "diff"      // ROOT/<id>/diff: the layer's files
	linkFile      = "link"      // ROOT/<id>/link: the LID, no newline
	lowerFile     = "lower"     // ROOT/<id>/lower: "l/<LID>:l/<LID>..." nearest first
	workDirName   = "work"      // ROOT/<id>/work: the workdir of a rw mount
	mergedDirName = "merged"    // ROOT/<id>/merged: the default mount point
	committedFile = "committed" // ROOT/<id>/committed: the layer has children
	emptyDirName  = "empty"     // ROOT/<id>/empty: the lower of a mounted base layer
	initSuffix    = "-init"     // ROOT/<id>-init: a container's init layer

	// metaDir holds what the overlay2 layout has no place for: images,
	// layer digests, mount records, the lock. It is not a layer.
	metaDir    = "ovlctl"
	lockFile   = metaDir + "/lock"
	trashDir   = metaDir + "/trash"
	mountsDir  = metaDir + "/mounts"
	imagesFile = metaDir + "/images.json"
	digestFile = metaDir + "/diffids.json"

	// applyPrefix names the scratch dir beside diff/ that ApplyDiff fills.
	applyPrefix = "apply-"

	// lidLen is the length of a short link name: 26 chars of [A-Z2-7].
	lidLen = 26
	// MaxDepth is the deepest stack the kernel mounts: 500 lower layers.
	MaxDepth = 500
	// maxOptions is what the legacy mount(2) option string holds.
	maxOptions = 4095
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Store is an overlay2 layer store at Root.
type Store struct {
	Root string
	// NS is the xattr namespace of overlay metadata written into layers.
	NS whiteout.NS
	// OvlfsBin is the ovlfs program for FUSE mounts ("" finds it).
	OvlfsBin string
	fd       int
	// Warn, when set, is told what an operation did not keep exactly (one
	// line each).
	Warn func(msg string)
	// readOnly: opened by OpenReadOnly; nothing may be written.
	readOnly bool
}

// Layer describes one layer of the store.
type Layer struct {
	ID        string   `json:"id"`
	Parent    string   `json:"parent,omitempty"`
	Link      string   `json:"link"`
	Lower     []string `json:"lower,omitempty"` // LIDs, nearest first
	Committed bool     `json:"committed"`
	Mounted   bool     `json:"mounted"`
	// MountPoint is where the layer is mounted ("" when it is not).
	MountPoint string `json:"mount_point,omitempty"`
	// Images and Containers name what uses the layer (filled by
	// LayersWithUsers): the images whose chain holds it, and the containers
	// whose own (or init) layer it is.
	Images     []string `json:"images,omitempty"`
	Containers []string `json:"containers,omitempty"`
}

// Depth is the number of layers in the stack of l, itself included.
func (l *Layer) Depth() int { return len(l.Lower) + 1 }

// DefaultRoot is /var/lib/ovlfs for root and $XDG_DATA_HOME/ovlfs (or
// ~/.local/share/ovlfs) for everybody else.
func DefaultRoot() string {
	if os.Geteuid() == 0 {
		return "/var/lib/ovlfs"
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "ovlfs")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/tmp"
	}
	return filepath.Join(home, ".local", "share", "ovlfs")
}

// OpenReadOnly opens the store at root for reading: it makes nothing, takes
// no lock and writes nothing, so it works on a store the caller may only read
// (and on Docker's own, which it leaves exactly as it was).
func OpenReadOnly(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil, fmt.Errorf("no store at %s (ovlctl create or import makes one)", abs)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open store", Path: abs, Err: err}
	}
	return &Store{Root: abs, NS: whiteout.DefaultNS(), fd: fd, readOnly: true}, nil
}

// Open opens (making it if needed) the store at root, for changing it.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o701); err != nil {
		return nil, fmt.Errorf("store %s: %w", abs, err)
	}
	fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open store", Path: abs, Err: err}
	}
	s := &Store{Root: abs, NS: whiteout.DefaultNS(), fd: fd}
	for _, d := range []string{linkDir, metaDir, trashDir, mountsDir} {
		if err := unix.Mkdirat(fd, d, 0o700); err != nil && err != unix.EEXIST {
			unix.Close(fd)
			return nil, &os.PathError{Op: "mkdir", Path: s.path(d), Err: err}
		}
	}
	return s, nil
}

// Close releases the store.
func (s *Store) Close() { unix.Close(s.fd) }

func (s *Store) path(rel ...string) string {
	return filepath.Join(append([]string{s.Root}, rel...)...)
}

// Lock takes the store's exclusive lock; the returned func releases it.
// Only what changes the store takes it: readers see each file whole (every
// file is replaced by a rename) and never wait.
func (s *Store) Lock() (func(), error) {
	if s.readOnly {
		return nil, errors.New("the store was opened read-only")
	}
	fd, err := unix.Openat(s.fd, lockFile, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "open lock", Path: s.path(lockFile), Err: err}
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "lock", Path: s.path(lockFile), Err: err}
	}
	return func() { unix.Close(fd) }, nil
}

// CheckID refuses ids that are not a plain name (they end up in mount options
// and paths).
func CheckID(id string) error {
	if !idRE.MatchString(id) || id == linkDir || id == metaDir {
		return fmt.Errorf("invalid layer id %q (want letters, digits, '_', '.', '-', at most 128)", id)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newLID returns a fresh short link name, as moby's generateID.
func newLID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)[:lidLen]
}

// ErrNotExist is returned for a layer id that the store does not hold.
var ErrNotExist = errors.New("no such layer")

// Exists reports whether id is a layer of the store (a dir with diff/).
func (s *Store) Exists(id string) bool {
	if CheckID(id) != nil {
		return false
	}
	var st unix.Stat_t
	return unix.Fstatat(s.fd, id+"/"+diffDirName, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// Layer reads the layer id.
func (s *Store) Layer(id string) (*Layer, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	if !s.Exists(id) {
		return nil, fmt.Errorf("layer %s: %w", id, ErrNotExist)
	}
	l := &Layer{ID: id}
	link, err := s.readFile(id + "/" + linkFile)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, err
	}
	l.Link = strings.TrimSpace(string(link))
	lower, err := s.readFile(id + "/" + lowerFile)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, err
	}
	l.Lower = parseLower(string(lower))
	if len(l.Lower) > 0 {
		l.Parent = s.idOfLID(l.Lower[0])
	}
	var st unix.Stat_t
	l.Committed = unix.Fstatat(s.fd, id+"/"+committedFile, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	mps := MountPoints()
	if m, ok := s.mountRecord(id); ok && contains(mps, m.Path) {
		l.MountPoint = m.Path
	} else if p := s.path(id, mergedDirName); contains(mps, p) {
		l.MountPoint = p // mounted by another tool (Docker) at the default place
	}
	l.Mounted = l.MountPoint != ""
	return l, nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// parseLower splits a lower file into its LIDs.
func parseLower(s string) []string {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	var out []string
	for _, e := range strings.Split(s, ":") {
		out = append(out, strings.TrimPrefix(e, linkDir+"/"))
	}
	return out
}

func formatLower(lids []string) string {
	p := make([]string, len(lids))
	for i, l := range lids {
		p[i] = linkDir + "/" + l
	}
	return strings.Join(p, ":")
}

// idOfLID resolves l/<lid> to the id of its layer ("" when dangling).
func (s *Store) idOfLID(lid string) string {
	target, err := readlinkAt(s.fd, linkDir+"/"+lid)
	if err != nil {
		return ""
	}
	// ../<id>/diff
	parts := strings.Split(filepath.Clean(target), "/")
	if len(parts) == 3 && parts[0] == ".." && parts[2] == diffDirName && CheckID(parts[1]) == nil {
		return parts[1]
	}
	return ""
}

// IDs lists the layer ids of the store, sorted.
func (s *Store) IDs() ([]string, error) {
	names, err := readNames(s.fd, ".")
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, n := range names {
		if s.Exists(n) {
			ids = append(ids, n)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Layers reads every layer of the store.
func (s *Store) Layers() ([]*Layer, error) {
	ids, err := s.IDs()
	if err != nil {
		return nil, err
	}
	var out []*Layer
	for _, id := range ids {
		l, err := s.Layer(id)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// Children lists the layers whose parent is id.
func (s *Store) Children(id string) ([]string, error) {
	ls, err := s.Layers()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range ls {
		if l.Parent == id {
			out = append(out, l.ID)
		}
	}
	return out, nil
}

// Create makes layer id (a random id when empty) on top of parent (none when
// empty) and returns its id: diff/, link, the l/ link, and for a child lower,
// work/ and `committed` in the parent.
func (s *Store) Create(id, parent string) (string, error) {
	unlock, err := s.Lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	return s.createLocked(id, parent)
}

// Preconditions: the store lock is held.
func (s *Store) createLocked(id, parent string) (string, error) {
	if id == "" {
		id = randomHex(32)
	}
	if err := CheckID(id); err != nil {
		return "", err
	}
	var lower []string
	if parent != "" {
		p, err := s.Layer(parent)
		if err != nil {
			return "", fmt.Errorf("parent: %w", err)
		}
		if p.Link == "" {
			return "", fmt.Errorf("parent %s has no link file (ovlctl check --repair)", parent)
		}
		if p.Depth()+1 > MaxDepth+1 {
			return "", fmt.Errorf("parent %s is %d layers deep: the kernel mounts at most %d lower layers", parent, p.Depth(), MaxDepth)
		}
		lower = append([]string{p.Link}, p.Lower...)
	}
	if err := unix.Mkdirat(s.fd, id, 0o701); err != nil {
		if err == unix.EEXIST {
			return "", fmt.Errorf("layer %s already exists", id)
		}
		return "", &os.PathError{Op: "mkdir", Path: s.path(id), Err: err}
	}
	lid, err := s.fill(id, lower)
	if err != nil {
		if lid != "" {
			unix.Unlinkat(s.fd, linkDir+"/"+lid, 0)
		}
		s.removeTree(id)
		return "", err
	}
	if parent != "" {
		if err := writeFileAt(s.fd, parent+"/"+committedFile, nil, 0o600); err != nil {
			return "", err
		}
	}
	return id, nil
}

// fill makes the contents of the new layer dir id and returns its LID.
func (s *Store) fill(id string, lower []string) (string, error) {
	if err := unix.Mkdirat(s.fd, id+"/"+diffDirName, 0o755); err != nil {
		return "", &os.PathError{Op: "mkdir", Path: s.path(id, diffDirName), Err: err}
	}
	unix.Fchmodat(s.fd, id+"/"+diffDirName, 0o755, 0) // whatever the umask
	var lid string
	for i := 0; ; i++ {
		lid = newLID()
		err := unix.Symlinkat("../"+id+"/"+diffDirName, s.fd, linkDir+"/"+lid)
		if err == nil {
			break
		}
		if err != unix.EEXIST || i > 10 {
			return "", &os.PathError{Op: "symlink", Path: s.path(linkDir, lid), Err: err}
		}
	}
	if err := writeFileAt(s.fd, id+"/"+linkFile, []byte(lid), 0o644); err != nil {
		return lid, err
	}
	if len(lower) > 0 {
		if err := writeFileAt(s.fd, id+"/"+lowerFile, []byte(formatLower(lower)), 0o644); err != nil {
			return lid, err
		}
		if err := unix.Mkdirat(s.fd, id+"/"+workDirName, 0o700); err != nil {
			return lid, &os.PathError{Op: "mkdir", Path: s.path(id, workDirName), Err: err}
		}
	}
	return lid, nil
}

// Remove deletes layer id. It refuses a layer with children, and a mounted one
// unless force (which unmounts it first). Images whose chain holds the layer
// are dropped only with force.
func (s *Store) Remove(id string, force bool) error {
	unlock, err := s.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	return s.removeLocked(id, force)
}

// Preconditions: the store lock is held.
func (s *Store) removeLocked(id string, force bool) error {
	l, err := s.Layer(id)
	if err != nil {
		return err
	}
	kids, err := s.Children(id)
	if err != nil {
		return err
	}
	if len(kids) > 0 {
		return fmt.Errorf("layer %s has children (%s): remove them first", id, strings.Join(kids, ", "))
	}
	imgs, err := s.imagesUsing(id)
	if err != nil {
		return err
	}
	if len(imgs) > 0 && !force {
		return fmt.Errorf("layer %s belongs to image %s (rm --force drops the image too)", id, strings.Join(imgs, ", "))
	}
	if l.Mounted {
		if !force {
			return fmt.Errorf("layer %s is mounted at %s (ovlctl umount %s, or rm --force)", id, l.MountPoint, id)
		}
		if err := s.putLocked(id); err != nil {
			return err
		}
	}
	// Out of sight in one step, then deleted at leisure.
	trash := trashDir + "/" + id + "." + randomHex(4)
	if err := unix.Renameat(s.fd, id, s.fd, trash); err != nil {
		return &os.PathError{Op: "rename", Path: s.path(id), Err: err}
	}
	if l.Link != "" && s.idOfLID(l.Link) == id {
		unix.Unlinkat(s.fd, linkDir+"/"+l.Link, 0)
	}
	unix.Unlinkat(s.fd, mountsDir+"/"+id+".json", 0)
	if err := s.forgetLayer(id); err != nil {
		return err
	}
	if l.Parent != "" {
		// The parent is read-only only while it has children.
		if kids, err := s.Children(l.Parent); err == nil && len(kids) == 0 {
			unix.Unlinkat(s.fd, l.Parent+"/"+committedFile, 0)
		}
	}
	return s.removeTree(trash)
}

// removeTree removes the entry rel of the store root, recursively.
func (s *Store) removeTree(rel string) error {
	fd, err := unix.Openat(s.fd, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		err = cow.RemoveAllIn(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("remove %s: %w", s.path(rel), err)
		}
		err = unix.Unlinkat(s.fd, rel, unix.AT_REMOVEDIR)
	} else if err == unix.ENOTDIR || err == unix.ELOOP {
		err = unix.Unlinkat(s.fd, rel, 0)
	}
	if err != nil && err != unix.ENOENT {
		return &os.PathError{Op: "remove", Path: s.path(rel), Err: err}
	}
	return nil
}

// Paths is what `docker inspect` shows as GraphDriver.Data for a layer.
type Paths struct {
	LowerDir  string `json:"LowerDir,omitempty"`
	MergedDir string `json:"MergedDir"`
	UpperDir  string `json:"UpperDir"`
	WorkDir   string `json:"WorkDir"`
}

// GraphDriver is `docker inspect`'s and `podman inspect`'s GraphDriver.
type GraphDriver struct {
	Name string `json:"Name"`
	Data Paths  `json:"Data"`
}

// LayerInfo is what inspect shows of a layer, in docker's and podman's shape.
type LayerInfo struct {
	ID          string      `json:"Id"`
	Parent      string      `json:"Parent,omitempty"`
	Link        string      `json:"Link"`
	Depth       int         `json:"Depth"`
	Committed   bool        `json:"Committed"`
	Mounted     bool        `json:"Mounted"`
	Images      []string    `json:"Images,omitempty"`
	Containers  []string    `json:"Containers,omitempty"`
	GraphDriver GraphDriver `json:"GraphDriver"`
}

// Inspect describes the layers ids, the lowers as their diff dirs.
func (s *Store) Inspect(ids ...string) ([]LayerInfo, error) {
	ls, err := s.LayersWithUsers()
	if err != nil {
		return nil, err
	}
	byID := map[string]*Layer{}
	for _, l := range ls {
		byID[l.ID] = l
	}
	out := []LayerInfo{}
	for _, id := range ids {
		l := byID[id]
		if l == nil {
			if _, err := s.Layer(id); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("layer %s: %w", id, ErrNotExist)
		}
		p := Paths{
			MergedDir: s.path(id, mergedDirName),
			UpperDir:  s.path(id, diffDirName),
			WorkDir:   s.path(id, workDirName),
		}
		var lowers []string
		for _, lid := range l.Lower {
			if pid := s.idOfLID(lid); pid != "" {
				lowers = append(lowers, s.path(pid, diffDirName))
			} else {
				lowers = append(lowers, s.path(linkDir, lid))
			}
		}
		p.LowerDir = strings.Join(lowers, ":")
		if l.Mounted {
			p.MergedDir = l.MountPoint
		}
		out = append(out, LayerInfo{ID: l.ID, Parent: l.Parent, Link: l.Link, Depth: l.Depth(), Committed: l.Committed,
			Mounted: l.Mounted, Images: l.Images, Containers: l.Containers, GraphDriver: GraphDriver{Name: "overlay", Data: p}})
	}
	return out, nil
}
