package layout

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Docker keeps what uses the layers of its overlay2 (or fuse-overlayfs) store
// beside it, under the data root: image/<driver>/layerdb (a dir per chain id
// with the layer's cache-id, a dir per container with its mount-id and
// init-id), image/<driver>/imagedb (image configs), and
// image/<driver>/repositories.json (the names). Reading them tells which
// layers images and containers use; ovlctl never writes them.

// dockerDB is Docker's image and layer database of a store.
type dockerDB struct {
	dir        string // <data root>/image/<driver>
	images     []Image
	containers []Container
}

// dockerDir is Docker's database dir of the store at root, or "" when the
// store is not Docker's.
func dockerDir(root string) string {
	dir := filepath.Join(filepath.Dir(root), "image", filepath.Base(root))
	if fi, err := os.Stat(filepath.Join(dir, "layerdb")); err == nil && fi.IsDir() {
		return dir
	}
	return ""
}

// IsDocker reports whether the store is Docker's own (its layer database is
// beside it).
func (s *Store) IsDocker() bool { return dockerDir(s.Root) != "" }

// keepsWhFiles reports whether the store's layers may hold `.wh.` whiteout
// files and opaque markers as their format: Docker's fuse-overlayfs driver
// applies image layers that way (fuse-overlayfs and ovlfs read them), while
// the upper dirs its mounts write are in the kernel format.
func (s *Store) keepsWhFiles() bool {
	d := dockerDir(s.Root)
	return d != "" && filepath.Base(d) == "fuse-overlayfs"
}

// errDocker refuses to change what Docker keeps track of.
func (s *Store) errDocker(what string) error {
	return fmt.Errorf("%s is Docker's store (its layer database is in %s): %s with docker, not ovlctl", s.Root, dockerDir(s.Root), what)
}

// readDocker reads Docker's database of the store (nil when it is not Docker's).
func (s *Store) readDocker() (*dockerDB, error) {
	dir := dockerDir(s.Root)
	if dir == "" {
		return nil, nil
	}
	db := &dockerDB{dir: dir}
	read := func(rel ...string) string {
		b, err := os.ReadFile(filepath.Join(append([]string{dir}, rel...)...))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	// Chain id -> cache id (the layer's dir name in the store).
	cache := map[string]string{}
	chains, err := os.ReadDir(filepath.Join(dir, "layerdb", "sha256"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, c := range chains {
		if id := read("layerdb", "sha256", c.Name(), "cache-id"); id != "" {
			cache["sha256:"+c.Name()] = id
		}
	}
	// Image id -> names.
	names := map[string][]string{}
	var repos struct {
		Repositories map[string]map[string]string
	}
	if b, err := os.ReadFile(filepath.Join(dir, "repositories.json")); err == nil {
		if err := json.Unmarshal(b, &repos); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "repositories.json"), err)
		}
	}
	for _, refs := range repos.Repositories {
		for ref, id := range refs {
			if !strings.Contains(ref, "@") { // name@digest repeats a name:tag
				names[id] = append(names[id], ref)
			}
		}
	}
	// Images that are another image's parent (build steps) are not listed
	// unless they have a name, as `docker images` does.
	parents := map[string]bool{}
	metas, _ := os.ReadDir(filepath.Join(dir, "imagedb", "metadata", "sha256"))
	for _, m := range metas {
		if p := read("imagedb", "metadata", "sha256", m.Name(), "parent"); p != "" {
			parents[p] = true
		}
	}
	configs, err := os.ReadDir(filepath.Join(dir, "imagedb", "content", "sha256"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	topOf := map[string]string{} // top chain id -> image name (for containers)
	for _, c := range configs {
		id := "sha256:" + c.Name()
		b, err := os.ReadFile(filepath.Join(dir, "imagedb", "content", "sha256", c.Name()))
		if err != nil {
			return nil, err
		}
		var cfg imageConfig
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, fmt.Errorf("image %s: %w", id, err)
		}
		im := Image{ID: id, Created: created(cfg.Created), Docker: true}
		chain := chainIDs(cfg.RootFS.DiffIDs)
		for _, ch := range chain {
			if l := cache[ch]; l != "" {
				im.Layers = append(im.Layers, l)
			}
		}
		if len(im.Layers) > 0 {
			im.Top = im.Layers[len(im.Layers)-1]
		}
		ns := names[id]
		sort.Strings(ns)
		if len(ns) == 0 {
			if parents[id] {
				continue
			}
			ns = []string{"<none>"}
		}
		if len(chain) > 0 {
			topOf[chain[len(chain)-1]] = ns[0]
			if ns[0] == "<none>" {
				topOf[chain[len(chain)-1]] = shortID(id)
			}
		}
		for _, n := range ns {
			im.Name = n
			db.images = append(db.images, im)
		}
	}
	mounts, err := os.ReadDir(filepath.Join(dir, "layerdb", "mounts"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, m := range mounts {
		c := Container{ID: m.Name(), Layer: read("layerdb", "mounts", m.Name(), "mount-id")}
		if c.Layer == "" {
			continue
		}
		c.Init = read("layerdb", "mounts", m.Name(), "init-id")
		c.Image = topOf[read("layerdb", "mounts", m.Name(), "parent")]
		c.Running = dockerRunning(filepath.Dir(filepath.Dir(dir)), m.Name())
		db.containers = append(db.containers, c)
	}
	return db, nil
}

// dockerRunning reads the state Docker keeps of container id under the data
// root (containers/<id>/config.v2.json).
func dockerRunning(dataRoot, id string) bool {
	b, err := os.ReadFile(filepath.Join(dataRoot, "containers", id, "config.v2.json"))
	if err != nil {
		return false
	}
	var cfg struct {
		State struct {
			Running bool
		}
	}
	return json.Unmarshal(b, &cfg) == nil && cfg.State.Running
}

// Container is a container's layers: its own (read-write) layer on its init
// layer, on top of an image.
type Container struct {
	ID      string `json:"id"`
	Layer   string `json:"layer"`
	Init    string `json:"init,omitempty"`
	Image   string `json:"image,omitempty"`
	Running bool   `json:"running"` // Docker says so; else its layer is mounted
}

// users is everything that uses the layers of a store.
type users struct {
	images     []Image
	containers []Container
}

// users reads the images and containers of the store: ovlctl's own (a
// container is a layer made by `ovlctl init`, on its -init layer) and, in a
// Docker store, Docker's.
func (s *Store) users(ls []*Layer) (*users, error) {
	own, err := s.ownImages()
	if err != nil {
		return nil, err
	}
	u := &users{images: own}
	byID := map[string]*Layer{}
	for _, l := range ls {
		byID[l.ID] = l
	}
	db, err := s.readDocker()
	if err != nil {
		return nil, err
	}
	if db != nil {
		u.images = append(u.images, db.images...)
		u.containers = db.containers
		for i := range u.containers {
			if l := byID[u.containers[i].Layer]; l != nil && l.Mounted {
				u.containers[i].Running = true
			}
		}
		return u, nil
	}
	for _, l := range ls {
		if l.Parent != l.ID+initSuffix {
			continue
		}
		c := Container{ID: l.ID, Layer: l.ID, Init: l.Parent, Running: l.Mounted}
		if in := byID[l.Parent]; in != nil {
			for _, im := range own {
				if in.Parent != "" && im.Top == in.Parent {
					c.Image = im.Name
					break
				}
			}
		}
		u.containers = append(u.containers, c)
	}
	return u, nil
}

// LayersWithUsers is Layers with Images and Containers filled in.
func (s *Store) LayersWithUsers() ([]*Layer, error) {
	ls, err := s.Layers()
	if err != nil {
		return nil, err
	}
	u, err := s.users(ls)
	if err != nil {
		return nil, err
	}
	byID := map[string]*Layer{}
	for _, l := range ls {
		byID[l.ID] = l
	}
	for _, im := range u.images {
		for _, id := range im.Layers {
			if l := byID[id]; l != nil && !contains(l.Images, im.Name) {
				l.Images = append(l.Images, im.Name)
			}
		}
	}
	for _, c := range u.containers {
		for _, id := range []string{c.Layer, c.Init} {
			if l := byID[id]; l != nil {
				l.Containers = append(l.Containers, c.ID)
			}
		}
	}
	return ls, nil
}

// Containers lists the containers of the store.
func (s *Store) Containers() ([]Container, error) {
	ls, err := s.Layers()
	if err != nil {
		return nil, err
	}
	u, err := s.users(ls)
	if err != nil {
		return nil, err
	}
	return u.containers, nil
}

// Ago says how long before now t was, as `docker images` does ("3 days ago").
func Ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	plural := func(n int, unit string) string {
		if n == 1 {
			if unit == "hour" {
				return "An hour ago"
			}
			return "1 " + unit + " ago"
		}
		return fmt.Sprintf("%d %ss ago", n, unit)
	}
	switch {
	case d < time.Minute:
		return "Less than a minute ago"
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute")
	case d < 48*time.Hour:
		return plural(int(d/time.Hour), "hour")
	case d < 14*24*time.Hour:
		return plural(int(d/(24*time.Hour)), "day")
	case d < 60*24*time.Hour:
		return plural(int(d/(7*24*time.Hour)), "week")
	case d < 2*365*24*time.Hour:
		return plural(int(d/(30*24*time.Hour)), "month")
	}
	return plural(int(d/(365*24*time.Hour)), "year")
}

// shortID is the first 12 hex digits of an id, without "sha256:".
func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
