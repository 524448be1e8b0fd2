package layout

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// Fault is one thing Check found that breaks or may break mounts.
type Fault struct {
	Layer    string `json:"layer,omitempty"`
	Path     string `json:"path"`
	Problem  string `json:"problem"`
	Repaired bool   `json:"repaired"`
	// Error says why a repair failed or is not possible.
	Error string `json:"error,omitempty"`
}

func (f Fault) String() string {
	s := f.Path + ": " + f.Problem
	switch {
	case f.Repaired:
		s += " (repaired)"
	case f.Error != "":
		s += " (not repaired: " + f.Error + ")"
	}
	return s
}

// checker collects the faults of one Check run.
type checker struct {
	s      *Store
	repair bool
	faults []Fault
	lidOf  map[string][]string // layer id -> the l/ links that point at it
	idOf   map[string]string   // LID -> layer id it points at ("" when dangling)
	owner  map[string]string   // LID -> the layer whose link file names it
	// whFiles: `.wh.` files are the layers' own format (keepsWhFiles).
	whFiles bool
}

// fault records a fault; fix, when repairing, repairs it.
func (c *checker) fault(layer, path, problem string, fix func() error) {
	f := Fault{Layer: layer, Path: path, Problem: problem}
	if c.repair && fix != nil {
		if err := fix(); err != nil {
			f.Error = err.Error()
		} else {
			f.Repaired = true
		}
	} else if c.repair {
		f.Error = "no automatic repair"
	}
	c.faults = append(c.faults, f)
}

// Check finds what breaks mounts of the store's layers and, with repair,
// fixes it: missing or dangling l/ links, missing link and lower files, lower
// chains that point at missing layers (reported), stale scratch in work dirs
// and apply dirs, a stale work/incompat/volatile, whiteouts in directories with
// nothing below them, `.wh.` files and fuse-overlayfs xattrs in a kernel-format
// layer. Layers that are mounted are not touched.
func (s *Store) Check(repair bool) ([]Fault, error) {
	if repair {
		// Only a repair writes: a plain check reads, takes no lock and works
		// on a store it may only read.
		unlock, err := s.Lock()
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	c := &checker{s: s, repair: repair, lidOf: map[string][]string{}, idOf: map[string]string{}, owner: map[string]string{}, whFiles: s.keepsWhFiles()}
	if err := c.links(); err != nil {
		return nil, err
	}
	ids, err := s.IDs()
	if err != nil {
		return nil, err
	}
	trash, _ := readNames(s.fd, trashDir)
	for _, t := range trash {
		c.fault("", s.path(trashDir, t), "unfinished layer removal", func() error { return s.removeTree(trashDir + "/" + t) })
	}
	for _, id := range ids {
		if b, err := s.readFile(id + "/" + linkFile); err == nil && len(b) > 0 {
			c.owner[strings.TrimSpace(string(b))] = id
		}
	}
	for _, id := range ids {
		c.linkFile(id)
	}
	c.danglingLinks()
	for _, id := range ids {
		c.lowerFile(id)
	}
	for _, id := range ids {
		if err := c.layer(id); err != nil {
			return c.faults, err
		}
	}
	return c.faults, nil
}

// links reads l/.
func (c *checker) links() error {
	names, err := readNames(c.s.fd, linkDir)
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, lid := range names {
		id := c.s.idOfLID(lid)
		if id != "" && !c.s.Exists(id) {
			id = ""
		}
		c.idOf[lid] = id
		if id != "" {
			c.lidOf[id] = append(c.lidOf[id], lid)
		}
	}
	return nil
}

// linkFile checks id's link file and its l/ link.
func (c *checker) linkFile(id string) {
	s := c.s
	b, err := s.readFile(id + "/" + linkFile)
	lid := strings.TrimSpace(string(b))
	if err != nil || lid == "" {
		fix := func() error {
			if ls := c.lidOf[id]; len(ls) > 0 {
				return writeFileAt(s.fd, id+"/"+linkFile, []byte(ls[0]), 0o644)
			}
			nl := newLID()
			if err := unix.Symlinkat("../"+id+"/"+diffDirName, s.fd, linkDir+"/"+nl); err != nil {
				return err
			}
			c.idOf[nl], c.lidOf[id] = id, []string{nl}
			return writeFileAt(s.fd, id+"/"+linkFile, []byte(nl), 0o644)
		}
		c.fault(id, s.path(id, linkFile), "missing link file", fix)
		return
	}
	if target, ok := c.idOf[lid]; !ok || target == "" {
		problem := "missing l/ link " + lid
		if ok {
			problem = "dangling l/ link " + lid
		}
		c.fault(id, s.path(linkDir, lid), problem, func() error {
			unix.Unlinkat(s.fd, linkDir+"/"+lid, 0)
			if err := unix.Symlinkat("../"+id+"/"+diffDirName, s.fd, linkDir+"/"+lid); err != nil {
				return err
			}
			c.idOf[lid] = id
			c.lidOf[id] = append(c.lidOf[id], lid)
			return nil
		})
	} else if target != id {
		c.fault(id, s.path(linkDir, lid), fmt.Sprintf("l/%s belongs to layer %s, not to this one", lid, target), nil)
	}
}

// danglingLinks removes l/ links that lead to no layer.
func (c *checker) danglingLinks() {
	lids := make([]string, 0, len(c.idOf))
	for lid := range c.idOf {
		lids = append(lids, lid)
	}
	sort.Strings(lids)
	for _, lid := range lids {
		if c.idOf[lid] != "" {
			continue
		}
		var st unix.Stat_t
		if unix.Fstatat(c.s.fd, linkDir+"/"+lid, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue // made again by linkFile
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			c.fault("", c.s.path(linkDir, lid), "not a symlink in l/", nil)
			continue
		}
		c.fault("", c.s.path(linkDir, lid), "dangling l/ link", func() error {
			delete(c.idOf, lid)
			return unix.Unlinkat(c.s.fd, linkDir+"/"+lid, 0)
		})
	}
}

// lowerFile checks id's lower chain: a missing lower file is rebuilt from a
// child's (which names this layer's chain after it); LIDs that lead nowhere are
// reported.
func (c *checker) lowerFile(id string) {
	s := c.s
	l, err := s.Layer(id)
	if err != nil {
		return
	}
	link := l.Link
	if link == "" && len(c.lidOf[id]) > 0 {
		link = c.lidOf[id][0]
	}
	if len(l.Lower) == 0 && link != "" {
		ls, _ := s.Layers()
		for _, k := range ls {
			if len(k.Lower) > 1 && k.Lower[0] == link {
				want := k.Lower[1:]
				c.fault(id, s.path(id, lowerFile), "missing lower file (layer "+k.ID+" says it has parents)", func() error {
					return writeFileAt(s.fd, id+"/"+lowerFile, []byte(formatLower(want)), 0o644)
				})
				l.Lower = want
				break
			}
		}
	}
	for _, lid := range l.Lower {
		if c.idOf[lid] == "" && c.owner[lid] == "" {
			c.fault(id, s.path(id, lowerFile), "lower chain points at a missing layer (l/"+lid+")", nil)
		}
	}
}

// layer checks the scratch and contents of layer id.
func (c *checker) layer(id string) error {
	s := c.s
	l, err := s.Layer(id)
	if err != nil {
		return err
	}
	if l.Mounted {
		return nil // its upper belongs to a live mount
	}
	names, _ := readNames(s.fd, id)
	for _, n := range names {
		if strings.HasPrefix(n, applyPrefix) {
			rel := id + "/" + n
			c.fault(id, s.path(rel), "stale apply scratch dir", func() error { return s.removeTree(rel) })
		}
	}
	if _, err := lstatAt(s.fd, id+"/"+workDirName+"/work/incompat/volatile"); err == nil {
		rel := id + "/" + workDirName + "/work/incompat"
		c.fault(id, s.path(rel, "volatile"), "stale volatile marker (the kernel refuses to mount)", func() error { return s.removeTree(rel) })
	}
	for _, scratch := range []string{"work", cow.ScratchName} {
		rel := id + "/" + workDirName + "/" + scratch
		if ents := staleScratch(s.fd, rel, scratch == cow.ScratchName); len(ents) > 0 {
			c.fault(id, s.path(rel), fmt.Sprintf("stale scratch in the work dir (%s)", strings.Join(ents, ", ")), func() error {
				fd, err := openDir(s.fd, rel)
				if err != nil {
					return err
				}
				defer unix.Close(fd)
				return cow.RemoveAllIn(fd)
			})
		}
	}
	fd, err := openDir(s.fd, id+"/"+diffDirName)
	if err != nil {
		return &os.PathError{Op: "open", Path: s.path(id, diffDirName), Err: err}
	}
	defer unix.Close(fd)
	if !c.whFiles {
		if err := c.markers(id, fd, ""); err != nil {
			return err
		}
	}
	lowers, ok := c.lowerFds(l)
	if !ok {
		return nil // reported as a broken chain
	}
	defer closeAll(lowers)
	return pruneWhiteouts(fd, lowers, s.NS, func(rel string) bool {
		c.fault(id, s.path(id, diffDirName, rel), "whiteout in a directory with nothing below it", func() error { return nil })
		return c.repair
	})
}

// lowerFds opens the lower layers of l through what check knows of the
// links (an l/ link may be missing).
func (c *checker) lowerFds(l *Layer) ([]int, bool) {
	var fds []int
	for _, lid := range l.Lower {
		id := c.idOf[lid]
		if id == "" {
			id = c.owner[lid]
		}
		fd, err := openDir(c.s.fd, id+"/"+diffDirName)
		if id == "" || err != nil {
			closeAll(fds)
			return nil, false
		}
		fds = append(fds, fd)
	}
	return fds, true
}

// markers finds `.wh.` files and fuse-overlayfs xattrs below dir dfd (path rel
// in layer id's diff/) and turns them into the kernel format.
func (c *checker) markers(id string, dfd int, rel string) error {
	s := c.s
	here := func(n string) string { return s.path(id, diffDirName, joinRel(rel, n)) }
	c.privateXattrs(id, dfd, "", here(""))
	names, err := readNames(dfd, ".")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		st, err := lstatAt(dfd, n)
		if err != nil {
			continue
		}
		switch {
		case n == whiteout.OpaqueMarker:
			c.fault(id, here(n), "opaque marker file in a kernel-format layer", func() error {
				if err := setXattrAt(dfd, "", s.NS.Key(whiteout.Opaque), []byte("y")); err != nil {
					return err
				}
				return removeEntry(dfd, n)
			})
			continue
		case strings.HasPrefix(n, whiteout.WhPrefix+whiteout.WhPrefix):
			c.fault(id, here(n), "AUFS meta file in a kernel-format layer", func() error { return removeEntry(dfd, n) })
			continue
		case whiteout.IsMarkerName(n):
			hidden := whiteout.HiddenBy(n)
			c.fault(id, here(n), ".wh. whiteout file in a kernel-format layer", func() error {
				if _, err := lstatAt(dfd, hidden); err != nil && hidden != "" && hidden != "." && hidden != ".." {
					if err := unix.Mknodat(dfd, hidden, unix.S_IFCHR, 0); err != nil {
						return err
					}
				}
				return removeEntry(dfd, n)
			})
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			cfd, err := unix.Openat(dfd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = c.markers(id, cfd, joinRel(rel, n))
			unix.Close(cfd)
			if err != nil {
				return err
			}
			continue
		}
		c.privateXattrs(id, dfd, n, here(n))
	}
	return nil
}

// privateXattrs removes fuse-overlayfs's private xattrs of entry name of dfd
// (dfd itself for ""), keeping an opaque mark as X(opaque). The owner-and-mode
// override stays: it is the file's owner (xattr_permissions=2), which ovlfs
// reads too.
func (c *checker) privateXattrs(id string, dfd int, name, path string) {
	xs, _ := xattrsAt(dfd, name)
	keys := make([]string, 0, len(xs))
	for k := range xs {
		if strings.HasPrefix(k, whiteout.FuseOverlayfsPrefix) && k != whiteout.OverrideStatUser {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		c.fault(id, path, "fuse-overlayfs xattr "+k+" in a kernel-format layer", func() error {
			if k == whiteout.FuseOverlayfsPrefix+"opaque" && whiteout.ClassifyOpaque(xs[k]) == whiteout.IsOpaque {
				if err := setXattrAt(dfd, name, c.s.NS.Key(whiteout.Opaque), []byte("y")); err != nil {
					return err
				}
			}
			return removeXattrAt(dfd, name, k)
		})
	}
}

// staleScratch lists what a work dir's scratch rel holds, leaving out what
// is kept there on purpose: the kernel's cached whiteout ("#<hex>", a char
// 0/0 it keeps between mounts), ovlfs's shared whiteout (in its own scratch,
// ours) and the incompat dir (reported on its own).
func staleScratch(dfd int, rel string, ours bool) []string {
	names, err := readNames(dfd, rel)
	if err != nil {
		return nil
	}
	fd, err := openDir(dfd, rel)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	var out []string
	for _, n := range names {
		st, err := lstatAt(fd, n)
		if err != nil || n == "incompat" {
			continue
		}
		if whiteout.IsWhiteoutStat(&st) && ((!ours && strings.HasPrefix(n, "#")) || (ours && n == cow.SharedWhiteout)) {
			continue
		}
		out = append(out, n)
	}
	sort.Strings(out)
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("and %d more", len(out)-5))
	}
	return out
}
