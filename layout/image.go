package layout

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Image is a named chain of layers.
type Image struct {
	Name    string    `json:"name"`
	ID      string    `json:"id"`     // the digest of the image config
	Layers  []string  `json:"layers"` // layer ids, bottom to top
	Top     string    `json:"top"`
	Created time.Time `json:"created,omitzero"` // from the image config
	// Docker is set for an image of Docker's own database (read, never
	// written by ovlctl).
	Docker bool `json:"docker,omitempty"`
}

// Images lists the images of the store by name: ovlctl's, and in a Docker
// store Docker's.
func (s *Store) Images() ([]Image, error) {
	imgs, err := s.ownImages()
	if err != nil {
		return nil, err
	}
	db, err := s.readDocker()
	if err != nil {
		return nil, err
	}
	if db != nil {
		imgs = append(imgs, db.images...)
		sort.SliceStable(imgs, func(i, j int) bool { return imgs[i].Name < imgs[j].Name })
	}
	return imgs, nil
}

// ownImages lists the images ovlctl imported into the store, by name.
func (s *Store) ownImages() ([]Image, error) {
	var imgs []Image
	b, err := s.readFile(imagesFile)
	if errors.Is(err, os.ErrNotExist) {
		return []Image{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &imgs); err != nil {
		return nil, fmt.Errorf("%s: %w", s.path(imagesFile), err)
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Name < imgs[j].Name })
	return imgs, nil
}

func (s *Store) saveImages(imgs []Image) error {
	b, err := json.MarshalIndent(imgs, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAt(s.fd, imagesFile, b, 0o600)
}

// imagesUsing names the images whose chain holds layer id.
func (s *Store) imagesUsing(id string) ([]string, error) {
	imgs, err := s.ownImages()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, im := range imgs {
		for _, l := range im.Layers {
			if l == id {
				out = append(out, im.Name)
				break
			}
		}
	}
	return out, nil
}

// forgetLayer drops the images that use layer id and its recorded digest.
// Preconditions: the store lock is held.
func (s *Store) forgetLayer(id string) error {
	imgs, err := s.ownImages()
	if err != nil {
		return err
	}
	keep := imgs[:0]
	for _, im := range imgs {
		used := false
		for _, l := range im.Layers {
			used = used || l == id
		}
		if !used {
			keep = append(keep, im)
		}
	}
	if len(keep) != len(imgs) {
		if err := s.saveImages(keep); err != nil {
			return err
		}
	}
	d, err := s.diffIDs()
	if err != nil {
		return err
	}
	if _, ok := d[id]; ok {
		delete(d, id)
		return s.saveDiffIDs(d)
	}
	return nil
}

// diffIDs maps layer ids to the digest of the tarball they were applied from.
func (s *Store) diffIDs() (map[string]string, error) {
	m := map[string]string{}
	b, err := s.readFile(digestFile)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", s.path(digestFile), err)
	}
	return m, nil
}

func (s *Store) saveDiffIDs(m map[string]string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAt(s.fd, digestFile, b, 0o600)
}

// archive is an image archive file: its members, by cleaned name.
type archive struct {
	f       *os.File
	members map[string]*tar.Header
	offsets map[string]int64
}

// seekCounter tells where in the file the tar reader is.
type seekCounter struct {
	f   *os.File
	pos int64
}

func (c *seekCounter) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	c.pos += int64(n)
	return n, err
}

func (c *seekCounter) Seek(off int64, whence int) (int64, error) {
	p, err := c.f.Seek(off, whence)
	if err == nil {
		c.pos = p
	}
	return p, err
}

// openArchive reads the member list of the archive at file (called name in
// messages).
func openArchive(file, name string) (*archive, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	a := &archive{f: f, members: map[string]*tar.Header{}, offsets: map[string]int64{}}
	c := &seekCounter{f: f}
	tr := tar.NewReader(c)
	last := ""
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err == io.ErrUnexpectedEOF {
			f.Close()
			if last == "" {
				return nil, fmt.Errorf("%s: truncated archive (it ends before its first member)", name)
			}
			return nil, fmt.Errorf("%s: truncated archive (it ends inside %s)", name, last)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: not an image archive (a plain tar): %w", name, err)
		}
		n := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		a.members[n] = hdr
		a.offsets[n] = c.pos
		last = hdr.Name
	}
	return a, nil
}

// open returns the contents of member name, following symlinks between
// members (docker save links repeated layers).
func (a *archive) open(name string) (io.Reader, error) {
	name = path.Clean(name)
	for i := 0; i < 8; i++ {
		hdr, ok := a.members[name]
		if !ok {
			return nil, fmt.Errorf("the archive has no %s", name)
		}
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			name = path.Clean(path.Join(path.Dir(name), hdr.Linkname))
			continue
		case tar.TypeLink:
			name = path.Clean(hdr.Linkname)
			continue
		}
		return io.NewSectionReader(a.f, a.offsets[name], hdr.Size), nil
	}
	return nil, fmt.Errorf("%s: too many links", name)
}

func (a *archive) readJSON(name string, v any) error {
	r, err := a.open(name)
	if err != nil {
		return err
	}
	if err := json.NewDecoder(r).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// imageSpec is one image of an archive: its layer members and diff ids.
type imageSpec struct {
	name    string
	id      string
	layers  []string // members, bottom first
	diffIDs []string
	created time.Time
}

type imageConfig struct {
	Created string `json:"created"` // RFC 3339; read leniently (see created)
	RootFS  struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// created parses an image config's creation time (zero when it has none).
func created(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// dockerImages reads manifest.json of a docker save / podman save archive.
func (a *archive) dockerImages() ([]imageSpec, error) {
	var man []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := a.readJSON("manifest.json", &man); err != nil {
		return nil, err
	}
	var out []imageSpec
	for _, m := range man {
		var cfg imageConfig
		if err := a.readJSON(m.Config, &cfg); err != nil {
			return nil, err
		}
		r, _ := a.open(m.Config)
		h := sha256.New()
		io.Copy(h, r)
		spec := imageSpec{id: digestOf(h), layers: m.Layers, diffIDs: cfg.RootFS.DiffIDs, created: created(cfg.Created)}
		if len(m.RepoTags) > 0 {
			spec.name = m.RepoTags[0]
		}
		out = append(out, spec)
	}
	return out, nil
}

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	} `json:"platform"`
}

func blobName(digest string) (string, error) {
	alg, hexd, ok := strings.Cut(digest, ":")
	if !ok || alg == "" || strings.ContainsAny(alg+hexd, "/.") {
		return "", fmt.Errorf("bad digest %q", digest)
	}
	return "blobs/" + alg + "/" + hexd, nil
}

// ociImages reads index.json of an OCI image layout: one image per manifest
// (an image index picks the manifest of this machine's platform).
func (a *archive) ociImages() ([]imageSpec, error) {
	var idx struct{ Manifests []ociDescriptor }
	if err := a.readJSON("index.json", &idx); err != nil {
		return nil, err
	}
	var out []imageSpec
	for _, d := range idx.Manifests {
		name := d.Annotations["io.containerd.image.name"]
		if name == "" {
			name = d.Annotations["org.opencontainers.image.ref.name"]
		}
		for depth := 0; strings.Contains(d.MediaType, "index") || strings.Contains(d.MediaType, "manifest.list"); depth++ {
			if depth > 4 {
				return nil, errors.New("index.json: image indexes nested too deep")
			}
			b, err := blobName(d.Digest)
			if err != nil {
				return nil, err
			}
			var sub struct{ Manifests []ociDescriptor }
			if err := a.readJSON(b, &sub); err != nil {
				return nil, err
			}
			if len(sub.Manifests) == 0 {
				return nil, fmt.Errorf("%s: an empty image index", b)
			}
			pick := sub.Manifests[0]
			for _, m := range sub.Manifests {
				if m.Platform != nil && m.Platform.OS == "linux" && m.Platform.Architecture == runtime.GOARCH {
					pick = m
					break
				}
			}
			d = pick
		}
		b, err := blobName(d.Digest)
		if err != nil {
			return nil, err
		}
		var man struct {
			Config ociDescriptor
			Layers []ociDescriptor
		}
		if err := a.readJSON(b, &man); err != nil {
			return nil, err
		}
		cb, err := blobName(man.Config.Digest)
		if err != nil {
			return nil, err
		}
		var cfg imageConfig
		if err := a.readJSON(cb, &cfg); err != nil {
			return nil, err
		}
		spec := imageSpec{name: name, id: man.Config.Digest, diffIDs: cfg.RootFS.DiffIDs, created: created(cfg.Created)}
		for _, l := range man.Layers {
			lb, err := blobName(l.Digest)
			if err != nil {
				return nil, err
			}
			spec.layers = append(spec.layers, lb)
		}
		out = append(out, spec)
	}
	return out, nil
}

// chainIDs computes the OCI chain ids of a list of diff ids.
func chainIDs(diffIDs []string) []string {
	out := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		h := sha256.Sum256([]byte(out[i-1] + " " + d))
		out[i] = "sha256:" + hex.EncodeToString(h[:])
	}
	return out
}

// Import reads a `docker save` / `podman save` archive or an OCI image layout
// tarball and makes each image a chain of layers. A layer's id is the hex of
// its chain id, so layers already in the store (same diff digest on the same
// parents) are reused. name, when set, names the (single) image.
func (s *Store) Import(file, name string, progress func(layer string, r io.Reader) io.Reader) ([]Image, error) {
	return s.importFrom(file, file, name, progress)
}

func (s *Store) importFrom(path, file, name string, progress func(layer string, r io.Reader) io.Reader) ([]Image, error) {
	if name != "" {
		if err := CheckName(name); err != nil {
			return nil, err
		}
	}
	a, err := openArchive(path, file)
	if err != nil {
		return nil, err
	}
	defer a.f.Close()
	var specs []imageSpec
	switch {
	case a.members["manifest.json"] != nil:
		specs, err = a.dockerImages()
	case a.members["index.json"] != nil:
		specs, err = a.ociImages()
	default:
		err = fmt.Errorf("%s: not a docker save or OCI image layout archive (no manifest.json or index.json)", file)
	}
	if err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("%s: the archive holds no image", file)
	}
	if name != "" && len(specs) > 1 {
		return nil, fmt.Errorf("%s holds %d images: --name names one", file, len(specs))
	}
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	var out []Image
	for _, spec := range specs {
		if name != "" {
			spec.name = name
		}
		im, err := s.importImage(a, spec, progress)
		if err != nil {
			return out, err
		}
		out = append(out, im)
	}
	return out, nil
}

// Preconditions: the store lock is held.
func (s *Store) importImage(a *archive, spec imageSpec, progress func(string, io.Reader) io.Reader) (Image, error) {
	if len(spec.layers) != len(spec.diffIDs) {
		return Image{}, fmt.Errorf("image %s: %d layers but %d diff ids in its config", spec.id, len(spec.layers), len(spec.diffIDs))
	}
	if len(spec.layers) > MaxDepth+1 {
		return Image{}, fmt.Errorf("image %s: %d layers, more than the kernel mounts", spec.id, len(spec.layers))
	}
	chain := chainIDs(spec.diffIDs)
	known, err := s.diffIDs()
	if err != nil {
		return Image{}, err
	}
	im := Image{Name: spec.name, ID: spec.id, Created: spec.created}
	parent := ""
	for i, member := range spec.layers {
		_, hexd, _ := strings.Cut(chain[i], ":")
		id := hexd
		if CheckID(id) != nil {
			return Image{}, fmt.Errorf("bad diff id %q", spec.diffIDs[i])
		}
		if s.Exists(id) && known[id] == spec.diffIDs[i] {
			im.Layers, parent = append(im.Layers, id), id
			continue // shared with an image already here
		}
		if s.Exists(id) {
			// Left by an import that did not finish.
			if err := s.removeLocked(id, false); err != nil {
				return Image{}, err
			}
		}
		r, err := a.open(member)
		if err != nil {
			return Image{}, err
		}
		if progress != nil {
			r = progress(fmt.Sprintf("layer %d/%d", i+1, len(spec.layers)), r)
		}
		if _, err := s.createLocked(id, parent); err != nil {
			return Image{}, err
		}
		ap, err := s.applyLocked(id, r)
		if err == nil && ap.DiffID != spec.diffIDs[i] {
			err = fmt.Errorf("digest %s, but the image config says %s", ap.DiffID, spec.diffIDs[i])
		}
		if err != nil {
			s.removeLocked(id, false)
			return Image{}, fmt.Errorf("layer %s: %w", member, err)
		}
		known[id] = ap.DiffID
		if err := s.saveDiffIDs(known); err != nil {
			return Image{}, err
		}
		im.Layers, parent = append(im.Layers, id), id
	}
	im.Top = parent
	if im.Name == "" {
		im.Name = shortID(im.ID)
	}
	imgs, err := s.ownImages()
	if err != nil {
		return Image{}, err
	}
	keep := imgs[:0]
	for _, o := range imgs {
		if o.Name != im.Name {
			keep = append(keep, o)
		}
	}
	return im, s.saveImages(append(keep, im))
}

// ImportStream imports an archive read from r (a pipe: the archive is read
// in any order, so it is kept in the store's own dir until imported).
func (s *Store) ImportStream(r io.Reader, name string, progress func(layer string, r io.Reader) io.Reader) ([]Image, error) {
	if name != "" {
		if err := CheckName(name); err != nil {
			return nil, err
		}
	}
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			return s.importFrom(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), "stdin", name, progress)
		}
	}
	fd, err := openBeneath(s.fd, metaDir, unix.O_RDWR|unix.O_TMPFILE, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "create spool file", Path: s.path(metaDir), Err: err}
	}
	f := os.NewFile(uintptr(fd), "stdin")
	defer f.Close()
	if progress != nil {
		r = progress("read archive", r)
	}
	if _, err := io.Copy(f, r); err != nil {
		return nil, fmt.Errorf("read the archive from stdin: %w", err)
	}
	return s.importFrom(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), "stdin", name, progress)
}

// RecordDiffID remembers the digest a layer was applied from (for reuse by
// Import).
func (s *Store) RecordDiffID(id, diffID string) error {
	unlock, err := s.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	d, err := s.diffIDs()
	if err != nil {
		return err
	}
	d[id] = diffID
	return s.saveDiffIDs(d)
}
