package layout

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

func TestCheckRepairs(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "a", "")
	mustApply(t, s, "a", mkTar(t, tarEntry{name: "x", body: "x"}, tarEntry{name: "od/y", body: "y"}))
	mustCreate(t, s, "b", "a")
	mustCreate(t, s, "c", "b")
	mustCreate(t, s, "orphan", "")
	la, _ := s.Layer("a")
	lb, _ := s.Layer("b")
	r := s.Root
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(filepath.Join(r, "l", la.Link)))                                       // missing l/ link
	must(os.Symlink("../gone/diff", filepath.Join(r, "l", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ"))) // dangling l/ link
	must(os.Remove(filepath.Join(r, "b", "link")))                                        // missing link file
	must(os.Remove(filepath.Join(r, "b", "lower")))                                       // missing lower file
	must(os.WriteFile(filepath.Join(r, "orphan", "lower"), []byte("l/MISSINGMISSINGMISSINGMIS"), 0o644))
	must(os.MkdirAll(filepath.Join(r, "c/work/work/#12/deep"), 0o755)) // stale scratch
	must(os.MkdirAll(filepath.Join(r, "c/work/ovlfs/#1.2"), 0o755))
	must(os.MkdirAll(filepath.Join(r, "c/work/work/incompat/volatile"), 0o755)) // stale volatile
	must(os.MkdirAll(filepath.Join(r, "c", applyPrefix+"123/etc"), 0o755))      // stale apply dir
	d := filepath.Join(r, "c", "diff")
	must(os.MkdirAll(filepath.Join(d, "new"), 0o755))
	must(unix.Mknod(filepath.Join(d, "new/ww"), unix.S_IFCHR, 0)) // whiteout with nothing below
	must(os.WriteFile(filepath.Join(d, ".wh.x"), nil, 0o644))     // .wh. files
	must(os.MkdirAll(filepath.Join(d, "od"), 0o755))
	must(os.WriteFile(filepath.Join(d, "od", whiteout.OpaqueMarker), nil, 0o644))
	must(os.WriteFile(filepath.Join(d, "f"), []byte("f"), 0o644)) // fuse-overlayfs xattrs
	must(unix.Lsetxattr(filepath.Join(d, "f"), "user.fuseoverlayfs.origin", []byte("o"), 0))
	must(os.MkdirAll(filepath.Join(d, "fo"), 0o755))
	must(unix.Lsetxattr(filepath.Join(d, "fo"), "user.fuseoverlayfs.opaque", []byte("y"), 0))

	want := []string{
		"missing l/ link " + la.Link, "dangling l/ link", "missing link file", "missing lower file",
		"lower chain points at a missing layer", "stale scratch in the work dir", "stale volatile marker",
		"stale apply scratch dir", "whiteout in a directory with nothing below it",
		".wh. whiteout file", "opaque marker file", "fuse-overlayfs xattr user.fuseoverlayfs.origin",
		"fuse-overlayfs xattr user.fuseoverlayfs.opaque",
	}
	faults, err := s.Check(false)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range faults {
		got = append(got, f.String())
		if f.Repaired {
			t.Errorf("repaired without --repair: %s", f)
		}
	}
	all := strings.Join(got, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("check does not report %q; it says:\n%s", w, all)
		}
	}
	if t.Failed() {
		return
	}
	faults, err = s.Check(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range faults {
		if !f.Repaired && !strings.Contains(f.Problem, "missing layer") {
			t.Errorf("not repaired: %s", f)
		}
	}
	faults, _ = s.Check(false)
	for _, f := range faults {
		if !strings.Contains(f.Problem, "missing layer (l/MISSING") {
			t.Errorf("after repair, still: %s", f)
		}
	}
	// What the repairs left.
	if l, _ := s.Layer("b"); l.Link != lb.Link || len(l.Lower) != 1 || l.Lower[0] != la.Link || l.Parent != "a" {
		t.Errorf("b after repair: %+v", l)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(d, "x"), &st); err != nil || !whiteout.IsWhiteoutStat(&st) {
		t.Errorf(".wh.x did not become a whiteout: %v", err)
	}
	for _, dir := range []string{"od", "fo"} {
		if v, _ := cow.Lgetxattr(filepath.Join(d, dir), s.NS.Key(whiteout.Opaque)); string(v) != "y" {
			t.Errorf("%s: X(opaque) = %q", dir, v)
		}
	}
	for _, gone := range []string{"new/ww", ".wh.x", "od/" + whiteout.OpaqueMarker} {
		if _, err := os.Lstat(filepath.Join(d, gone)); err == nil {
			t.Errorf("%s still there", gone)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(d, "f")); string(b) != "f" {
		t.Error("f lost its content")
	}
}

// archive builders: docker save and OCI image layout.

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func addFile(t testing.TB, tw *tar.Writer, name string, b []byte) {
	t.Helper()
	if err := tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(b)), Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(b)
}

func configFor(layers [][]byte) []byte {
	var ids []string
	for _, l := range layers {
		ids = append(ids, "sha256:"+sha(l))
	}
	b, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": ids}})
	return b
}

// dockerArchive writes a docker save archive of the images (name -> layers).
func dockerArchive(t testing.TB, path string, images map[string][][]byte) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	var man []map[string]any
	done := map[string]bool{}
	for name, layers := range images {
		cfg := configFor(layers)
		addFile(t, tw, sha(cfg)+".json", cfg)
		var names []string
		for _, l := range layers {
			n := sha(l) + "/layer.tar"
			if !done[n] {
				addFile(t, tw, n, l)
				done[n] = true
			}
			names = append(names, n)
		}
		man = append(man, map[string]any{"Config": sha(cfg) + ".json", "RepoTags": []string{name}, "Layers": names})
	}
	mb, _ := json.Marshal(man)
	addFile(t, tw, "manifest.json", mb)
	tw.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ociArchive writes an OCI image layout archive with gzip layers.
func ociArchive(t testing.TB, path, name string, layers [][]byte) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	blob := func(data []byte) string {
		addFile(t, tw, "blobs/sha256/"+sha(data), data)
		return "sha256:" + sha(data)
	}
	cfg := configFor(layers)
	var descs []map[string]any
	for _, l := range layers {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(l)
		zw.Close()
		descs = append(descs, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(gz.Bytes()), "size": gz.Len()})
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "config": map[string]any{"digest": blob(cfg)}, "layers": descs})
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(man),
		"annotations": map[string]string{"org.opencontainers.image.ref.name": name}}}})
	addFile(t, tw, "index.json", idx)
	addFile(t, tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	tw.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImport(t *testing.T) {
	s := newStore(t)
	base := mkTar(t, tarEntry{name: "etc/os", body: "base"}, tarEntry{name: "rm-me", body: "x"})
	app := mkTar(t, tarEntry{name: ".wh.rm-me"}, tarEntry{name: "app", body: "app"})
	other := mkTar(t, tarEntry{name: "other", body: "o"})
	dir := t.TempDir()
	dockerArchive(t, filepath.Join(dir, "d.tar"), map[string][][]byte{"app:1": {base, app}})
	imgs, err := s.Import(filepath.Join(dir, "d.tar"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != "app:1" || len(imgs[0].Layers) != 2 || imgs[0].Top != imgs[0].Layers[1] {
		t.Fatalf("images %+v", imgs)
	}
	top, _ := s.Layer(imgs[0].Top)
	if top.Parent != imgs[0].Layers[0] {
		t.Errorf("top's parent %q", top.Parent)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.Root, imgs[0].Top, "diff/rm-me"), &st); err != nil || !whiteout.IsWhiteoutStat(&st) {
		t.Errorf("rm-me whiteout: %v", err)
	}
	// The OCI archive shares the base layer: reused, not extracted again.
	ociArchive(t, filepath.Join(dir, "o.tar"), "other:2", [][]byte{base, other})
	imgs2, err := s.Import(filepath.Join(dir, "o.tar"), "renamed", nil)
	if err != nil {
		t.Fatal(err)
	}
	if imgs2[0].Layers[0] != imgs[0].Layers[0] || imgs2[0].Name != "renamed" {
		t.Errorf("base layer not shared: %v vs %v", imgs2[0].Layers, imgs[0].Layers)
	}
	all, _ := s.Images()
	ids, _ := s.IDs()
	if len(all) != 2 || len(ids) != 3 {
		t.Errorf("%d images, %d layers; want 2, 3", len(all), len(ids))
	}
	u, err := s.DiskUsage()
	if err != nil || u.Shared == 0 || u.Unique == 0 {
		t.Errorf("df: %+v %v", u, err)
	}
	// A layer whose digest lies is refused and nothing of it stays.
	bad := filepath.Join(dir, "bad.tar")
	dockerArchive(t, bad, map[string][][]byte{"bad": {mkTar(t, tarEntry{name: "z", body: "z"})}})
	data, _ := os.ReadFile(bad)
	os.WriteFile(bad, bytes.Replace(data, []byte("z\x00"), []byte("y\x00"), 1), 0o644)
	if _, err := s.Import(bad, "", nil); err == nil {
		t.Error("a layer with the wrong digest was imported")
	}
	if ids2, _ := s.IDs(); len(ids2) != 3 {
		t.Errorf("layers after a failed import: %v", ids2)
	}
	if err := s.Remove(imgs[0].Top, false); err == nil {
		t.Error("rm of an image's layer without --force")
	}
	if err := s.Remove(imgs[0].Top, true); err != nil {
		t.Fatal(err)
	}
	if all, _ := s.Images(); len(all) != 1 {
		t.Errorf("images after rm --force: %+v", all)
	}
}
