package tests

// Real-mount tests of ovlctl: images imported from an archive made here, mounted
// with ovlfs and with the kernel; diff/apply round trips; deep chains; a
// hand-made Docker store; hostile tarballs; check --repair. Every top-level
// name starts with "ctl".

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	ctlOnce sync.Once
	ctlBin  string
	ctlErr  error
)

// ctlBinary builds ./cmd/ovlctl once into a temp dir.
func ctlBinary(t testing.TB) string {
	t.Helper()
	ctlOnce.Do(func() {
		ctlBin = filepath.Join(binDir, "ovlctl") // runMain removes it
		if out, err := exec.Command("go", "build", "-o", ctlBin, "github.com/ovlfs/ovlfs/cmd/ovlctl").CombinedOutput(); err != nil {
			ctlErr = fmt.Errorf("go build ./cmd/ovlctl: %v\n%s", err, out)
		}
	})
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	return ctlBin
}

// ctlSetup skips without real mounts and returns a fresh store root.
func ctlSetup(t *testing.T) string {
	t.Helper()
	requireMount(t)
	if ovlfsBuildErr != nil {
		t.Fatalf("the ovlfs binary could not be built:\n%v", ovlfsBuildErr)
	}
	ctlBinary(t)
	return filepath.Join(t.TempDir(), "root")
}

type ctlResult struct {
	out, err string
	code     int
}

// ctl runs ovlctl --root root args..., with ovlfs under test as OVLFS_BIN.
func ctl(t testing.TB, root string, stdin []byte, args ...string) ctlResult {
	t.Helper()
	cmd := exec.Command(ctlBinary(t), append([]string{"--root", root}, args...)...)
	cmd.Env = append(os.Environ(), "OVLFS_BIN="+ovlfsBin)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := ctlResult{out: o.String(), err: e.String()}
	if err != nil {
		r.code = 1
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		}
	}
	return r
}

// ctlOK runs ovlctl and fails the test unless it succeeds; it returns the
// last line of stdout.
func ctlOK(t testing.TB, root string, args ...string) string {
	t.Helper()
	r := ctl(t, root, nil, args...)
	if r.code != 0 {
		t.Fatalf("ovlctl %s: exit %d\n%s", strings.Join(args, " "), r.code, r.err)
	}
	lines := strings.Split(strings.TrimRight(r.out, "\n"), "\n")
	return lines[len(lines)-1]
}

// ctlMount mounts layer id and undoes it in t.Cleanup, even on failure.
func ctlMount(t testing.TB, root, id string, args ...string) string {
	t.Helper()
	r := ctl(t, root, nil, append([]string{"mount", id}, args...)...)
	lines := strings.Split(strings.TrimRight(r.out, "\n"), "\n")
	mnt := lines[len(lines)-1]
	t.Cleanup(func() {
		if mnt != "" && isMounted(mnt) {
			if r := ctl(t, root, nil, "umount", id); r.code != 0 {
				t.Errorf("ovlctl umount %s: %s", id, r.err)
				unix.Unmount(mnt, unix.MNT_DETACH)
			}
		}
	})
	if r.code != 0 {
		t.Fatalf("ovlctl mount %s %v: exit %d\n%s", id, args, r.code, r.err)
	}
	if !isMounted(mnt) {
		t.Fatalf("ovlctl mount printed %q, which is not a mount point", mnt)
	}
	return mnt
}

func ctlUmount(t testing.TB, root, id string) {
	t.Helper()
	ctlOK(t, root, "umount", id)
}

// ctlEnt is one tar entry.
type ctlEnt struct {
	name, link string
	typ        byte
	mode       int64
	uid, gid   int
	body       string
	xattrs     map[string]string
}

func ctlTar(ents ...ctlEnt) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mt := time.Date(2024, 1, 2, 3, 4, 5, 600000000, time.UTC)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mt, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		tw.WriteHeader(h)
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return b.Bytes()
}

func ctlSha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// ctlArchive writes a `docker save` archive of one image.
func ctlArchive(t testing.TB, path, name string, layers ...[]byte) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	add := func(n string, data []byte) {
		tw.WriteHeader(&tar.Header{Name: n, Size: int64(len(data)), Mode: 0o644, Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	var ids, names []string
	for _, l := range layers {
		ids = append(ids, "sha256:"+ctlSha(l))
		names = append(names, ctlSha(l)+"/layer.tar")
		add(names[len(names)-1], l)
	}
	cfg, _ := json.Marshal(map[string]any{"os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": ids}})
	add(ctlSha(cfg)+".json", cfg)
	man, _ := json.Marshal([]map[string]any{{"Config": ctlSha(cfg) + ".json", "RepoTags": []string{name}, "Layers": names}})
	add("manifest.json", man)
	tw.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ctlImage is the three-layer image: deletes, opaque dirs, hard links,
// symlinks, xattrs, owners.
func ctlImage() [][]byte {
	l1 := ctlTar(
		ctlEnt{name: "etc/", typ: tar.TypeDir},
		ctlEnt{name: "etc/passwd", body: "root:x:0:0\n", xattrs: map[string]string{"user.origin": "l1"}},
		ctlEnt{name: "etc/shadow", body: "secret", mode: 0o600},
		ctlEnt{name: "bin/sh", body: "#!sh", mode: 0o755, uid: 1000, gid: 1000},
		ctlEnt{name: "bin/ash", typ: tar.TypeSymlink, link: "sh"},
		ctlEnt{name: "usr/lib/libc.so", body: "libc"},
		ctlEnt{name: "usr/lib/libc.so.6", typ: tar.TypeLink, link: "usr/lib/libc.so"},
		ctlEnt{name: "var/cache/a", body: "a"},
		ctlEnt{name: "var/cache/sub/b", body: "b"},
		ctlEnt{name: "opt/tool/bin", body: "tool"},
	)
	l2 := ctlTar(
		ctlEnt{name: "etc/.wh.shadow"},
		ctlEnt{name: "var/cache/", typ: tar.TypeDir, mode: 0o700},
		ctlEnt{name: "var/cache/c", body: "c"},
		ctlEnt{name: "var/cache/.wh..wh..opq"}, // after the dir's entries
		ctlEnt{name: "srv/data", body: "data", xattrs: map[string]string{"user.k": "v"}},
	)
	l3 := ctlTar(
		ctlEnt{name: "etc/passwd", body: "root:x:0:0\nme:x:1000:1000\n", xattrs: map[string]string{"user.origin": "l3"}},
		ctlEnt{name: "usr/lib/.wh.libc.so"},
		ctlEnt{name: ".wh.opt"},
		ctlEnt{name: "home/me/a", body: "shared", uid: 1000},
		ctlEnt{name: "home/me/b", typ: tar.TypeLink, link: "home/me/a"},
		ctlEnt{name: "home/me/link", typ: tar.TypeSymlink, link: "/etc/passwd"},
	)
	return [][]byte{l1, l2, l3}
}

// ctlExpected is every path of the merged view of ctlImage.
var ctlExpected = []string{".", "bin", "bin/ash", "bin/sh", "etc", "etc/passwd", "home", "home/me", "home/me/a",
	"home/me/b", "home/me/link", "srv", "srv/data", "usr", "usr/lib", "usr/lib/libc.so.6", "var", "var/cache", "var/cache/c"}

func ctlCheckTree(t *testing.T, what string, got map[string]Entry) {
	t.Helper()
	var paths []string
	for p, e := range got {
		paths = append(paths, p)
		if e.Err != "" {
			t.Errorf("%s: %s: %s", what, p, e.Err)
		}
	}
	sort.Strings(paths)
	if strings.Join(paths, " ") != strings.Join(ctlExpected, " ") {
		t.Errorf("%s shows\n  %v\nwant\n  %v", what, paths, ctlExpected)
	}
	if e := got["etc/passwd"]; e.Size != int64(len("root:x:0:0\nme:x:1000:1000\n")) || fmt.Sprint(e.Xattrs) != `[user.origin="l3"]` {
		t.Errorf("%s: etc/passwd %+v", what, e)
	}
	if e := got["bin/sh"]; e.UID != 1000 || e.Mode != 0o755 {
		t.Errorf("%s: bin/sh %+v", what, e)
	}
	if e := got["var/cache"]; e.Mode != 0o700 {
		t.Errorf("%s: var/cache mode %o", what, e.Mode)
	}
	if e := got["home/me/link"]; e.Target != "/etc/passwd" {
		t.Errorf("%s: home/me/link %+v", what, e)
	}
}

// TestCtlImportMount imports the three-layer image and mounts a container
// layer on it with ovlfs and with the kernel: both show the expected tree.
// A change made through the mount, exported with diff and applied to a new
// layer, gives the same layer back.
func TestCtlImportMount(t *testing.T) {
	root := ctlSetup(t)
	arc := filepath.Join(t.TempDir(), "img.tar")
	ctlArchive(t, arc, "test/img:1", ctlImage()...)
	ctlOK(t, root, "import", arc)
	var imgs []struct {
		Name, ID, Top string
		Layers        []string
	}
	if err := json.Unmarshal([]byte(ctl(t, root, nil, "images", "--json").out), &imgs); err != nil || len(imgs) != 1 {
		t.Fatalf("images --json: %v %+v", err, imgs)
	}
	im := imgs[0]
	if im.Name != "test/img:1" || len(im.Layers) != 3 || im.Top != im.Layers[2] || !strings.HasPrefix(im.ID, "sha256:") {
		t.Fatalf("image %+v", im)
	}
	// Importing again reuses every layer.
	ctlOK(t, root, "import", arc, "--name", "again")
	if ls := ctl(t, root, nil, "ls", "--json").out; strings.Count(ls, `"id"`) != 3 {
		t.Errorf("a second import made new layers:\n%s", ls)
	}
	ctlOK(t, root, "create", "--parent", im.Top, "ctr")

	fuse := ctlMount(t, root, "ctr", "--driver", "fuse")
	fuseView := snapshot(t, fuse)
	ctlCheckTree(t, "fuse mount", fuseView)
	ctlUmount(t, root, "ctr")
	kern := ctlMount(t, root, "ctr", "--driver", "kernel")
	kernView := snapshot(t, kern)
	ctlCheckTree(t, "kernel mount", kernView)
	requireSameTree(t, "ovlctl mount --driver fuse vs --driver kernel", fuseView, kernView)
	var infos []struct {
		GraphDriver struct{ Data map[string]string }
	}
	json.Unmarshal([]byte(ctl(t, root, nil, "inspect", "ctr").out), &infos)
	var insp map[string]string
	if len(infos) == 1 {
		insp = infos[0].GraphDriver.Data
	}
	if insp["MergedDir"] != kern || insp["UpperDir"] != filepath.Join(root, "ctr/diff") || strings.Count(insp["LowerDir"], ":") != 2 {
		t.Errorf("inspect: %v", insp)
	}

	// Changes through the kernel mount: write, delete, replace a dir, link.
	writeFile(t, filepath.Join(kern, "etc/passwd"), []byte("changed\n"), 0o640)
	os.Remove(filepath.Join(kern, "bin/ash"))
	os.RemoveAll(filepath.Join(kern, "var/cache"))
	mkdirMode(t, filepath.Join(kern, "var/cache"), 0o751)
	writeFile(t, filepath.Join(kern, "var/cache/new"), []byte("n"), 0o644)
	os.Link(filepath.Join(kern, "var/cache/new"), filepath.Join(kern, "var/cache/new2"))
	setXattr(t, filepath.Join(kern, "srv/data"), "user.added", []byte("x"))
	chown(t, filepath.Join(kern, "srv/data"), 123, 456)
	ctlUmount(t, root, "ctr")

	tarball := filepath.Join(t.TempDir(), "ctr.tar")
	ctlOK(t, root, "diff", "ctr", tarball)
	ctlOK(t, root, "create", "--parent", im.Top, "copy")
	ctlOK(t, root, "apply", "copy", tarball)
	want := ctlLayerTree(t, filepath.Join(root, "ctr/diff"))
	got := ctlLayerTree(t, filepath.Join(root, "copy/diff"))
	if d := ctlDiffMaps(got, want); len(d) > 0 {
		t.Errorf("apply(diff(ctr)) differs from ctr:\n  %s", strings.Join(d, "\n  "))
	}
	// And the copy mounts to the same view as the original.
	a := snapshot(t, ctlMount(t, root, "ctr", "--ro", "--driver", "kernel"))
	b := snapshot(t, ctlMount(t, root, "copy", "--ro", "--driver", "fuse"))
	requireSameTree(t, "copy (fuse) vs ctr (kernel)", b, a)
}

// ctlLayerTree describes a layer dir exactly: type, mode, owner, size,
// content hash, target, rdev, mtime, every xattr, and hard link groups.
func ctlLayerTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	first := map[uint64]string{}
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		unix.Lstat(p, &st)
		s := fmt.Sprintf("%s %04o %d:%d rdev=%d", fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid, st.Rdev)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			h, _ := hashFile(p)
			s += " " + h
			if f, ok := first[st.Ino]; ok {
				s += " same-inode-as=" + f
			}
			first[st.Ino] = rel
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			s += " -> " + l
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			s += " mtime=" + time.Unix(st.Mtim.Unix()).UTC().Format(time.RFC3339Nano)
		}
		// The kernel's bookkeeping (origin file handles, impure, uuid) is
		// never exported; opaque is, as a marker.
		x, _ := listXattrs(p, func(k string) bool {
			for _, m := range []string{"origin", "impure", "uuid", "nlink", "upper"} {
				if k == "trusted.overlay."+m || k == "user.overlay."+m {
					return false
				}
			}
			return true
		})
		s += " " + strings.Join(x, ",")
		out[rel] = s
		return nil
	})
	return out
}

func ctlDiffMaps(got, want map[string]string) []string {
	var d []string
	for k, w := range want {
		if g := got[k]; g != w {
			d = append(d, fmt.Sprintf("%s: got %q, want %q", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s: unexpected %q", k, g))
		}
	}
	sort.Strings(d)
	return d
}

// TestCtlDeepChain: 150 layers (an option string far past 4095 bytes) mount
// with both drivers.
func TestCtlDeepChain(t *testing.T) {
	root := ctlSetup(t)
	const n = 150
	parent := ""
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("layer%03d", i)
		args := []string{"create", id}
		if parent != "" {
			args = append(args, "--parent", parent)
		}
		ctlOK(t, root, args...)
		ents := []ctlEnt{{name: fmt.Sprintf("d/f%03d", i), body: id}}
		if i > 0 && i%10 == 0 {
			ents = append(ents, ctlEnt{name: fmt.Sprintf("d/.wh.f%03d", i-1)})
		}
		if r := ctl(t, root, ctlTar(ents...), "apply", id, "-"); r.code != 0 {
			t.Fatalf("apply %s: %s", id, r.err)
		}
		parent = id
	}
	want := n - (n-1)/10
	for _, driver := range []string{"kernel", "fuse"} {
		mnt := ctlMount(t, root, parent, "--ro", "--driver", driver)
		names, err := readdirNames(filepath.Join(mnt, "d"))
		if err != nil || len(names) != want {
			t.Errorf("%s: %d names in d/ (%v), want %d", driver, len(names), err, want)
		}
		if b, _ := os.ReadFile(filepath.Join(mnt, "d/f000")); string(b) != "layer000" {
			t.Errorf("%s: d/f000 = %q", driver, b)
		}
		ctlUmount(t, root, parent)
	}
}

// TestCtlDockerLayout mounts a store made by hand the way Docker's overlay2
// driver lays it out.
func TestCtlDockerLayout(t *testing.T) {
	root := ctlSetup(t)
	mk := func(id, lid, lower string) string {
		d := filepath.Join(root, id, "diff")
		mkdirs(t, d)
		os.WriteFile(filepath.Join(root, id, "link"), []byte(lid), 0o644)
		if lower != "" {
			os.WriteFile(filepath.Join(root, id, "lower"), []byte(lower), 0o644)
			mkdirs(t, filepath.Join(root, id, "work"))
			os.WriteFile(filepath.Join(root, id, "committed"), nil, 0o600)
		}
		mkdirs(t, filepath.Join(root, "l"))
		symlink(t, "../"+id+"/diff", filepath.Join(root, "l", lid))
		return d
	}
	base := mk("aaa111", "AAAAAAAAAAAAAAAAAAAAAAAAAA", "")
	mid := mk("bbb222", "BBBBBBBBBBBBBBBBBBBBBBBBBB", "l/AAAAAAAAAAAAAAAAAAAAAAAAAA")
	top := mk("ccc333", "CCCCCCCCCCCCCCCCCCCCCCCCCC", "l/BBBBBBBBBBBBBBBBBBBBBBBBBB:l/AAAAAAAAAAAAAAAAAAAAAAAAAA")
	os.Remove(filepath.Join(root, "ccc333", "committed"))
	writeFile(t, filepath.Join(base, "etc/os-release"), []byte("base"), 0o644)
	writeFile(t, filepath.Join(base, "etc/gone"), []byte("x"), 0o644)
	writeFile(t, filepath.Join(base, "var/old/x"), []byte("x"), 0o644)
	mkWhiteout(t, filepath.Join(mid, "etc/gone"))
	mkdirMode(t, filepath.Join(mid, "var"), 0o755)
	mkdirMode(t, filepath.Join(mid, "var/old"), 0o755)
	setOpaque(t, filepath.Join(mid, "var/old"))
	writeFile(t, filepath.Join(mid, "var/old/y"), []byte("y"), 0o644)
	writeFile(t, filepath.Join(top, "etc/os-release"), []byte("top"), 0o644)
	var views []map[string]Entry
	for _, driver := range []string{"kernel", "fuse"} {
		mnt := ctlMount(t, root, "ccc333", "--driver", driver)
		v := snapshot(t, mnt)
		views = append(views, v)
		checkHidden(t, mnt, "etc/gone", "var/old/x")
		if b, _ := os.ReadFile(filepath.Join(mnt, "etc/os-release")); string(b) != "top" {
			t.Errorf("%s: os-release %q", driver, b)
		}
		if b, _ := os.ReadFile(filepath.Join(mnt, "var/old/y")); string(b) != "y" {
			t.Errorf("%s: var/old/y %q", driver, b)
		}
		ctlUmount(t, root, "ccc333")
	}
	requireSameTree(t, "docker layout: fuse vs kernel", views[1], views[0])
	if r := ctl(t, root, nil, "check"); r.code != 0 {
		t.Errorf("check of a clean Docker store: %s%s", r.out, r.err)
	}
}

// TestCtlHostile: refused tarballs give one "ovlctl: " line, exit non-zero,
// touch nothing outside the layer and leave the layer empty.
func TestCtlHostile(t *testing.T) {
	root := ctlSetup(t)
	sentinel := filepath.Join(filepath.Dir(root), "SENTINEL")
	writeFile(t, filepath.Join(sentinel, "file"), []byte("keep"), 0o644)
	cases := map[string][]byte{
		"absolute":         ctlTar(ctlEnt{name: "/tmp/pwned", body: "x"}),
		"dotdot":           ctlTar(ctlEnt{name: "../../SENTINEL/pwned", body: "x"}),
		"through symlink":  ctlTar(ctlEnt{name: "s", typ: tar.TypeSymlink, link: sentinel}, ctlEnt{name: "s/pwned", body: "x"}),
		"symlink escape":   ctlTar(ctlEnt{name: "s", typ: tar.TypeSymlink, link: "../../SENTINEL"}),
		"hardlink outside": ctlTar(ctlEnt{name: "h", typ: tar.TypeLink, link: "../../SENTINEL/file"}),
		"wh name":          ctlTar(ctlEnt{name: "a/.wh."}),
	}
	ctlOK(t, root, "create", "victim")
	before := ctlLayerTree(t, filepath.Dir(root))
	for name, data := range cases {
		r := ctl(t, root, data, "apply", "victim", "-")
		lines := strings.Split(strings.TrimRight(r.err, "\n"), "\n")
		if r.code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "ovlctl: ") {
			t.Errorf("%s: exit %d, stderr %q; want one ovlctl: line and a failure", name, r.code, r.err)
		}
	}
	after := ctlLayerTree(t, filepath.Dir(root))
	for _, k := range []string{"root/victim", "root/ovlctl/lock"} {
		delete(before, k)
		delete(after, k)
	}
	if d := ctlDiffMaps(after, before); len(d) > 0 {
		t.Errorf("refused tarballs changed the disk:\n  %s", strings.Join(d, "\n  "))
	}
}

// TestCtlCheckRepair breaks a store in the ways that stop mounts, and check
// --repair makes it mount again.
func TestCtlCheckRepair(t *testing.T) {
	root := ctlSetup(t)
	ctlOK(t, root, "create", "base")
	if r := ctl(t, root, ctlTar(ctlEnt{name: "f", body: "f"}, ctlEnt{name: "d/x", body: "x"}), "apply", "base", "-"); r.code != 0 {
		t.Fatal(r.err)
	}
	ctlOK(t, root, "create", "--parent", "base", "top")
	link, _ := os.ReadFile(filepath.Join(root, "base/link"))
	os.Remove(filepath.Join(root, "l", string(link)))                 // missing l/ link
	mkdirs(t, filepath.Join(root, "top/work/work/incompat/volatile")) // stale volatile
	writeFile(t, filepath.Join(root, "top/diff/.wh.f"), nil, 0o644)   // .wh. file
	writeFile(t, filepath.Join(root, "top/diff/d/.wh..wh..opq"), nil, 0o644)
	mkdirs(t, filepath.Join(root, "top/diff/new"))
	mkWhiteout(t, filepath.Join(root, "top/diff/new/w")) // whiteout with nothing below
	if r := ctl(t, root, nil, "mount", "top", "--driver", "kernel"); r.code == 0 {
		ctlUmount(t, root, "top")
		t.Fatal("a layer with a missing lower link mounted")
	}
	r := ctl(t, root, nil, "check")
	if r.code == 0 || strings.Count(r.out, "\n") < 5 {
		t.Errorf("check found:\n%s%s", r.out, r.err)
	}
	if r := ctl(t, root, nil, "check", "--repair"); r.code != 0 {
		t.Fatalf("check --repair: %s%s", r.out, r.err)
	}
	if r := ctl(t, root, nil, "check"); r.code != 0 || strings.TrimSpace(r.out) != "no faults" {
		t.Errorf("after repair: %s%s", r.out, r.err)
	}
	for _, driver := range []string{"kernel", "fuse"} {
		mnt := ctlMount(t, root, "top", "--driver", driver)
		checkHidden(t, mnt, "f", "d/x", ".wh.f", "d/.wh..wh..opq")
		if names, _ := readdirNames(filepath.Join(mnt, "new")); len(names) != 0 {
			t.Errorf("%s: new/ lists %v", driver, names)
		}
		ctlUmount(t, root, "top")
	}
}

// TestCtlErrors: bad input gives one line and a failure, and changes nothing.
func TestCtlErrors(t *testing.T) {
	root := ctlSetup(t)
	ctlOK(t, root, "create", "a")
	for _, args := range [][]string{
		{"create", "a"}, {"create", "--parent", "nope", "b"}, {"create", "../x"}, {"rm", "nope"},
		{"mount", "a", "--driver", "bogus"}, {"umount", "a"}, {"frobnicate"}, {"apply", "a", "/nonexistent.tar"},
		{"import", "/nonexistent.tar"}, {"inspect", "nope"},
	} {
		r := ctl(t, root, nil, args...)
		lines := strings.Split(strings.TrimRight(r.err, "\n"), "\n")
		if r.code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "ovlctl: ") {
			t.Errorf("ovlctl %v: exit %d, stderr %q", args, r.code, r.err)
		}
	}
	ctlOK(t, root, "create", "--parent", "a", "b")
	if r := ctl(t, root, nil, "rm", "a"); r.code == 0 {
		t.Error("rm of a layer with children succeeded")
	}
	mnt := ctlMount(t, root, "b")
	if r := ctl(t, root, nil, "rm", "b"); r.code == 0 || !isMounted(mnt) {
		t.Error("rm of a mounted layer without --force succeeded")
	}
	ctlOK(t, root, "rm", "--force", "b")
	if isMounted(mnt) {
		t.Error("rm --force left the mount")
	}
	ctlOK(t, root, "rm", "a")
}
