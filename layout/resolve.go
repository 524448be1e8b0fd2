package layout

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Resolve turns what a user gives where a layer is meant into a layer id: a
// layer id; an image name (":latest" when it has no tag) or image id, meaning
// its top layer; a Docker container id, meaning its own layer; or a unique
// prefix of any of these ids, as docker accepts them.
func (s *Store) Resolve(ref string) (string, error) {
	if ref == "" {
		return "", fmt.Errorf("an empty layer id")
	}
	if s.Exists(ref) {
		return ref, nil
	}
	ls, err := s.Layers()
	if err != nil {
		return "", err
	}
	u, err := s.users(ls)
	if err != nil {
		return "", err
	}
	for _, im := range u.images {
		if im.Top != "" && (im.Name == ref || im.Name == ref+":latest" || im.ID == ref || im.ID == "sha256:"+ref) {
			return im.Top, nil
		}
	}
	for _, c := range u.containers {
		if c.ID == ref {
			return c.Layer, nil
		}
	}
	// A prefix: of layer ids, image ids, container ids.
	ref = strings.TrimPrefix(ref, "sha256:")
	found := map[string][]string{} // layer id -> what the prefix matched
	for _, l := range ls {
		if strings.HasPrefix(l.ID, ref) {
			found[l.ID] = append(found[l.ID], "layer "+l.ID)
		}
	}
	for _, im := range u.images {
		if im.Top != "" && strings.HasPrefix(strings.TrimPrefix(im.ID, "sha256:"), ref) {
			found[im.Top] = append(found[im.Top], "image "+shortID(im.ID))
		}
	}
	for _, c := range u.containers {
		if strings.HasPrefix(c.ID, ref) {
			found[c.Layer] = append(found[c.Layer], "container "+shortID(c.ID))
		}
	}
	switch len(found) {
	case 0:
		if CheckID(ref) != nil {
			return "", CheckID(ref)
		}
		return "", fmt.Errorf("layer %s: %w", ref, ErrNotExist)
	case 1:
		for id := range found {
			return id, nil
		}
	}
	var what []string
	for _, w := range found {
		what = append(what, w[0])
	}
	sort.Strings(what)
	if len(what) > 4 {
		what = append(what[:4], fmt.Sprintf("and %d more", len(what)-4))
	}
	return "", fmt.Errorf("%q is ambiguous: it begins %s (give more of the id)", ref, strings.Join(what, ", "))
}

// FindImage finds the image named ref (":latest" added when it has no tag),
// or with ref as its id or a unique prefix of it.
func (s *Store) FindImage(ref string) (Image, error) {
	imgs, err := s.Images()
	if err != nil {
		return Image{}, err
	}
	for _, im := range imgs {
		if im.Name == ref || im.Name == ref+":latest" || im.ID == ref || im.ID == "sha256:"+ref {
			return im, nil
		}
	}
	p := strings.TrimPrefix(ref, "sha256:")
	var hits []Image
	ids := map[string]bool{}
	for _, im := range imgs {
		if p != "" && strings.HasPrefix(strings.TrimPrefix(im.ID, "sha256:"), p) {
			hits = append(hits, im)
			ids[im.ID] = true
		}
	}
	switch {
	case len(hits) == 0:
		return Image{}, fmt.Errorf("no such image %s (ovlctl images lists them)", ref)
	case len(ids) > 1:
		return Image{}, fmt.Errorf("%q is ambiguous: %d images have ids beginning so (give more of the id)", ref, len(ids))
	case len(hits) > 1:
		names := make([]string, len(hits))
		for i, h := range hits {
			names[i] = h.Name
		}
		return Image{}, fmt.Errorf("image %s has %d names (%s): give one of them", shortID(hits[0].ID), len(hits), strings.Join(names, ", "))
	}
	return hits[0], nil
}

// A docker image reference: [domain[:port]/]path[/path...][:tag][@digest],
// path components lowercase (distribution/reference's grammar).
var (
	refDomain    = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?`
	refComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	refRE        = regexp.MustCompile(`^(?:` + refDomain + `/)?` + refComponent + `(?:/` + refComponent + `)*` +
		refTail)
	refPathRE = regexp.MustCompile(`^` + refComponent + `(?:/` + refComponent + `)*` + refTail)
	refTail   = `(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$`
)

// CheckName refuses an image name that docker would not take as a reference.
// The first part is a registry only with a '.' or ':' in it, or "localhost";
// otherwise it is part of the (lowercase) path.
func CheckName(name string) error {
	re := refRE
	if first, _, ok := strings.Cut(name, "/"); !ok || !(strings.ContainsAny(first, ".:") || first == "localhost") {
		re = refPathRE
	}
	if len(name) > 255 || !re.MatchString(name) {
		return fmt.Errorf("invalid image name %q: want a docker reference such as example.com/team/app:1.0 (lowercase letters, digits, '.', '_', '-', '/', then :TAG)", name)
	}
	return nil
}

// RemoveImage drops image ref (a name, or an id when it has one name) and
// removes the layers of its chain that no other image, container or layer
// uses and that are not mounted. It returns the removed layer ids. An image
// that a layer outside its chain sits on (a container) is refused: remove
// that first.
func (s *Store) RemoveImage(ref string) ([]string, error) {
	if s.IsDocker() {
		return nil, s.errDocker("remove images")
	}
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	im, err := s.FindImage(ref)
	if err != nil {
		return nil, err
	}
	imgs, err := s.ownImages()
	if err != nil {
		return nil, err
	}
	others := map[string]bool{} // layers other images use
	var keep []Image
	for _, o := range imgs {
		if o.Name == im.Name {
			continue
		}
		keep = append(keep, o)
		for _, id := range o.Layers {
			others[id] = true
		}
	}
	ls, err := s.Layers()
	if err != nil {
		return nil, err
	}
	inChain := map[string]bool{}
	for _, id := range im.Layers {
		inChain[id] = true
	}
	var users []string
	for _, l := range ls {
		if !inChain[l.ID] && !others[l.ID] && inChain[l.Parent] {
			users = append(users, l.ID)
		}
	}
	if len(users) > 0 {
		return nil, fmt.Errorf("image %s is in use by layer %s (ovlctl rm it first)", im.Name, strings.Join(users, ", "))
	}
	if keep == nil {
		keep = []Image{}
	}
	if err := s.saveImages(keep); err != nil {
		return nil, err
	}
	var removed []string
	for i := len(im.Layers) - 1; i >= 0; i-- {
		id := im.Layers[i]
		l, err := s.Layer(id)
		if err != nil || others[id] || l.Mounted {
			break // what is below stays: this layer still uses it
		}
		if kids, err := s.Children(id); err != nil || len(kids) > 0 {
			break
		}
		if err := s.removeLocked(id, false); err != nil {
			return removed, err
		}
		removed = append(removed, id)
	}
	return removed, nil
}

// Prune removes the layers nothing uses: in no image, not a container's,
// not mounted, and not below any of those (df's RECLAIMABLE). It returns
// the removed ids and the bytes freed.
func (s *Store) Prune() ([]string, int64, error) {
	if s.IsDocker() {
		return nil, 0, s.errDocker("prune")
	}
	unlock, err := s.Lock()
	if err != nil {
		return nil, 0, err
	}
	defer unlock()
	ls, err := s.Layers()
	if err != nil {
		return nil, 0, err
	}
	u, err := s.users(ls)
	if err != nil {
		return nil, 0, err
	}
	used := inUse(ls, u)
	// Deepest first: a layer goes after everything on top of it.
	sort.Slice(ls, func(i, j int) bool { return ls[i].Depth() > ls[j].Depth() })
	var removed []string
	var freed int64
	for _, l := range ls {
		if used[l.ID] {
			continue
		}
		sz, _ := s.diskSize(l.ID)
		if err := s.removeLocked(l.ID, false); err != nil {
			return removed, freed, err
		}
		removed = append(removed, l.ID)
		freed += sz
	}
	return removed, freed, nil
}
