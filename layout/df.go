package layout

import (
	"os"

	"golang.org/x/sys/unix"
)

// LayerUsage is the disk use of one layer.
type LayerUsage struct {
	ID       string   `json:"id"`
	Size     int64    `json:"size"`   // bytes of disk used by diff/, hard links counted once
	Images   []string `json:"images"` // images whose chain holds the layer
	Children int      `json:"children"`
	Mounted  bool     `json:"mounted"`
	InUse    bool     `json:"in_use"` // in an image, mounted, or below a mounted layer
}

// Usage is the disk use of the store, as `docker system df` sums it up.
type Usage struct {
	Layers      []LayerUsage `json:"layers"`
	Total       int64        `json:"total"`
	Shared      int64        `json:"shared"`      // layers in two or more images
	Unique      int64        `json:"unique"`      // layers in exactly one image
	Unused      int64        `json:"unused"`      // layers in no image
	Reclaimable int64        `json:"reclaimable"` // layers nothing uses: rm frees them
}

// DiskUsage measures every layer of the store.
func (s *Store) DiskUsage() (*Usage, error) {
	ls, err := s.Layers()
	if err != nil {
		return nil, err
	}
	imgs, err := s.Images()
	if err != nil {
		return nil, err
	}
	byID := map[string]*Layer{}
	kids := map[string]int{}
	for _, l := range ls {
		byID[l.ID] = l
		if l.Parent != "" {
			kids[l.Parent]++
		}
	}
	inImages := map[string][]string{}
	for _, im := range imgs {
		for _, id := range im.Layers {
			inImages[id] = append(inImages[id], im.Name)
		}
	}
	inUse := map[string]bool{}
	for _, l := range ls {
		if l.Mounted == "" && len(inImages[l.ID]) == 0 {
			continue
		}
		for p := l; p != nil && !inUse[p.ID]; p = byID[p.Parent] {
			inUse[p.ID] = true
		}
	}
	u := &Usage{Layers: []LayerUsage{}}
	for _, l := range ls {
		size, err := s.diskSize(l.ID)
		if err != nil {
			return nil, err
		}
		lu := LayerUsage{ID: l.ID, Size: size, Images: inImages[l.ID], Children: kids[l.ID], Mounted: l.Mounted != "", InUse: inUse[l.ID]}
		if lu.Images == nil {
			lu.Images = []string{}
		}
		u.Layers = append(u.Layers, lu)
		u.Total += size
		switch n := len(lu.Images); {
		case n >= 2:
			u.Shared += size
		case n == 1:
			u.Unique += size
		default:
			u.Unused += size
		}
		if !lu.InUse {
			u.Reclaimable += size
		}
	}
	return u, nil
}

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
