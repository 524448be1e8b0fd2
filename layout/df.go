package layout

import (
	"os"

	"golang.org/x/sys/unix"
)

// LayerUsage is the disk use of one layer.
type LayerUsage struct {
	ID         string   `json:"id"`
	Size       int64    `json:"size"`   // bytes of disk used by diff/, hard links counted once
	Images     []string `json:"images"` // images whose chain holds the layer
	Containers []string `json:"containers"`
	Children   int      `json:"children"`
	Mounted    bool     `json:"mounted"`
	// InUse: in an image, a container's, mounted, or below one of those.
	InUse bool `json:"in_use"`
}

// TypeUsage is one row of `docker system df`.
type TypeUsage struct {
	Total       int   `json:"total"`
	Active      int   `json:"active"` // images with a container; running containers
	Size        int64 `json:"size"`
	Reclaimable int64 `json:"reclaimable"`
}

// Usage is the disk use of the store, as `docker system df` sums it up.
type Usage struct {
	Layers []LayerUsage `json:"layers"`
	// Images: the layers of every image, counted once; reclaimable are those
	// no image with a container holds. Containers: their own and init layers;
	// reclaimable are those of containers not running.
	Images      TypeUsage `json:"images"`
	Containers  TypeUsage `json:"containers"`
	Total       int64     `json:"total"`
	Shared      int64     `json:"shared"`      // layers in two or more images
	Unique      int64     `json:"unique"`      // layers in exactly one image
	Unused      int64     `json:"unused"`      // layers in no image
	Reclaimable int64     `json:"reclaimable"` // layers nothing uses: prune frees them
}

// inUse marks the layers that something uses and those below them.
func inUse(ls []*Layer, u *users) map[string]bool {
	byID := map[string]*Layer{}
	for _, l := range ls {
		byID[l.ID] = l
	}
	used := map[string]bool{}
	mark := func(id string) {
		for p := byID[id]; p != nil && !used[p.ID]; p = byID[p.Parent] {
			used[p.ID] = true
		}
	}
	for _, l := range ls {
		if l.Mounted {
			mark(l.ID)
		}
	}
	for _, im := range u.images {
		for _, id := range im.Layers {
			mark(id)
		}
	}
	for _, c := range u.containers {
		mark(c.Layer)
		mark(c.Init)
	}
	return used
}

// DiskUsage measures every layer of the store.
func (s *Store) DiskUsage() (*Usage, error) {
	ls, err := s.LayersWithUsers()
	if err != nil {
		return nil, err
	}
	u, err := s.users(ls)
	if err != nil {
		return nil, err
	}
	kids := map[string]int{}
	for _, l := range ls {
		if l.Parent != "" {
			kids[l.Parent]++
		}
	}
	used := inUse(ls, u)
	size := map[string]int64{}
	out := &Usage{Layers: []LayerUsage{}}
	for _, l := range ls {
		sz, err := s.diskSize(l.ID)
		if err != nil {
			return nil, err
		}
		size[l.ID] = sz
		lu := LayerUsage{ID: l.ID, Size: sz, Images: l.Images, Containers: l.Containers, Children: kids[l.ID], Mounted: l.Mounted, InUse: used[l.ID]}
		if lu.Images == nil {
			lu.Images = []string{}
		}
		if lu.Containers == nil {
			lu.Containers = []string{}
		}
		out.Layers = append(out.Layers, lu)
		out.Total += sz
		switch n := len(lu.Images); {
		case n >= 2:
			out.Shared += sz
		case n == 1:
			out.Unique += sz
		default:
			out.Unused += sz
		}
		if !lu.InUse {
			out.Reclaimable += sz
		}
	}
	// The summary: an image is active when a container runs on it (a
	// container names its image by a name, or by short id).
	activeRef := map[string]bool{}
	for _, c := range u.containers {
		activeRef[c.Image] = true
	}
	active := map[string]bool{} // image id -> has a container
	for _, im := range u.images {
		if activeRef[im.Name] || activeRef[shortID(im.ID)] {
			active[im.ID] = true
		}
	}
	imageLayers, activeLayers := map[string]bool{}, map[string]bool{}
	seen := map[string]bool{}
	for _, im := range u.images {
		if !seen[im.ID] {
			seen[im.ID] = true
			out.Images.Total++
			if active[im.ID] {
				out.Images.Active++
			}
		}
		for _, id := range im.Layers {
			imageLayers[id] = true
			if active[im.ID] {
				activeLayers[id] = true
			}
		}
	}
	for id := range imageLayers {
		out.Images.Size += size[id]
		if !activeLayers[id] {
			out.Images.Reclaimable += size[id]
		}
	}
	for _, c := range u.containers {
		out.Containers.Total++
		sz := size[c.Layer] + size[c.Init]
		out.Containers.Size += sz
		if c.Running {
			out.Containers.Active++
		} else {
			out.Containers.Reclaimable += sz
		}
	}
	return out, nil
}

// LayerSize is the disk use of layer id's diff/ (hard links counted once).
func (s *Store) LayerSize(id string) (int64, error) { return s.diskSize(id) }

// diskSize sums the blocks of layer id's diff/.
func (s *Store) diskSize(id string) (int64, error) {
	fd, err := openDir(s.fd, id+"/"+diffDirName)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: s.path(id, diffDirName), Err: err}
	}
	defer unix.Close(fd)
	seen := map[[2]uint64]bool{}
	return dirSize(fd, seen)
}

func dirSize(dfd int, seen map[[2]uint64]bool) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return 0, err
	}
	total := st.Blocks * 512
	names, err := readNames(dfd, ".")
	if err != nil {
		return 0, err
	}
	for _, n := range names {
		st, err := lstatAt(dfd, n)
		if err != nil {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			cfd, err := unix.Openat(dfd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return 0, err
			}
			sz, err := dirSize(cfd, seen)
			unix.Close(cfd)
			if err != nil {
				return 0, err
			}
			total += sz
			continue
		}
		k := [2]uint64{st.Dev, st.Ino}
		if !seen[k] {
			seen[k] = true
			total += st.Blocks * 512
		}
	}
	return total, nil
}
