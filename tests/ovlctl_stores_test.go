package tests

// ovlctl on real stores: read-only commands that write nothing, Docker's own
// layer database, rootless owners, layer root modes, ovlfs's own scratch, ids
// and prefixes, the verbs users reach for, per-command help and bad input.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// ctlSimpleImage is a two-layer image whose directories are all 0755 and
// files 0644 (an ordinary user can read all of it).
func ctlSimpleImage() [][]byte {
	return [][]byte{
		ctlTar(ctlEnt{name: "etc/", typ: tar.TypeDir}, ctlEnt{name: "etc/os-release", body: "base"}, ctlEnt{name: "bin/sh", body: "sh", mode: 0o755}),
		ctlTar(ctlEnt{name: "etc/os-release", body: "top"}, ctlEnt{name: "etc/.wh.gone"}),
	}
}

// ctlDockerStore makes, under dataRoot, what dockerd's overlay2 driver and
// layer database hold: image "busybox:latest" (layers L1, L2), image
// "alpine:3" (L1 only), container c0ffee... on busybox (its init and own
// layers), and a layer nothing uses. It returns the overlay2 dir and the ids.
type dockerIDs struct {
	l1, l2, init, ctr, orphan, container, busyboxID string
}

func ctlDockerStore(t *testing.T, dataRoot string, running bool) (string, dockerIDs) {
	t.Helper()
	root := filepath.Join(dataRoot, "overlay2")
	hexOf := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return hex.EncodeToString(h[:])
	}
	ids := dockerIDs{l1: hexOf("cache1"), l2: hexOf("cache2"), ctr: hexOf("mount"), orphan: hexOf("orphan"), container: "c0ffee" + hexOf("ctr")[6:]}
	ids.init = ids.ctr + "-init"
	lids := map[string]string{}
	n := 0
	mk := func(id string, lower ...string) {
		n++
		lid := fmt.Sprintf("%026d", n)
		lids[id] = lid
		mkdirMode(t, filepath.Join(root, id), 0o710)
		mkdirMode(t, filepath.Join(root, id, "diff"), 0o755)
		writeFile(t, filepath.Join(root, id, "link"), []byte(lid), 0o644)
		mkdirs(t, filepath.Join(root, "l"))
		symlink(t, "../"+id+"/diff", filepath.Join(root, "l", lid))
		if len(lower) > 0 {
			parent := lower[0]
			chain := "l/" + lids[parent]
			if b, err := os.ReadFile(filepath.Join(root, parent, "lower")); err == nil {
				chain += ":" + string(b)
			}
			writeFile(t, filepath.Join(root, parent, "committed"), nil, 0o600)
			writeFile(t, filepath.Join(root, id, "lower"), []byte(chain), 0o644)
			mkdirMode(t, filepath.Join(root, id, "work"), 0o700)
		}
	}
	mk(ids.l1)
	writeFile(t, filepath.Join(root, ids.l1, "diff/etc/os-release"), []byte("busybox"), 0o644)
	mk(ids.l2, ids.l1)
	writeFile(t, filepath.Join(root, ids.l2, "diff/bin/busybox"), bytes.Repeat([]byte("b"), 10000), 0o755)
	mk(ids.init, ids.l2)
	writeFile(t, filepath.Join(root, ids.init, "diff/etc/hostname"), nil, 0o644)
	mk(ids.ctr, ids.init)
	writeFile(t, filepath.Join(root, ids.ctr, "diff/root/.ash_history"), []byte("ls\n"), 0o600)
	mk(ids.orphan)
	writeFile(t, filepath.Join(root, ids.orphan, "diff/big"), bytes.Repeat([]byte("o"), 50000), 0o644)

	db := filepath.Join(dataRoot, "image", "overlay2")
	d1, d2 := "sha256:"+hexOf("diff1"), "sha256:"+hexOf("diff2")
	c1 := d1
	h := sha256.Sum256([]byte(c1 + " " + d2))
	c2 := "sha256:" + hex.EncodeToString(h[:])
	layer := func(chain, cache, diff, parent string) {
		d := filepath.Join(db, "layerdb", "sha256", strings.TrimPrefix(chain, "sha256:"))
		writeFile(t, filepath.Join(d, "cache-id"), []byte(cache), 0o644)
		writeFile(t, filepath.Join(d, "diff"), []byte(diff), 0o644)
		if parent != "" {
			writeFile(t, filepath.Join(d, "parent"), []byte(parent), 0o644)
		}
	}
	layer(c1, ids.l1, d1, "")
	layer(c2, ids.l2, d2, c1)
	config := func(created string, diffs ...string) string {
		b, _ := json.Marshal(map[string]any{"created": created, "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": diffs}})
		id := sha256.Sum256(b)
		writeFile(t, filepath.Join(db, "imagedb", "content", "sha256", hex.EncodeToString(id[:])), b, 0o600)
		return "sha256:" + hex.EncodeToString(id[:])
	}
	busybox := config("2024-01-02T03:04:05.123456789Z", d1, d2)
	alpine := config("2023-05-06T07:08:09Z", d1)
	ids.busyboxID = busybox
	repos, _ := json.Marshal(map[string]any{"Repositories": map[string]any{
		"busybox": map[string]string{"busybox:latest": busybox, "busybox@sha256:" + hexOf("x"): busybox},
		"alpine":  map[string]string{"alpine:3": alpine},
	}})
	writeFile(t, filepath.Join(db, "repositories.json"), repos, 0o600)
	m := filepath.Join(db, "layerdb", "mounts", ids.container)
	writeFile(t, filepath.Join(m, "mount-id"), []byte(ids.ctr), 0o644)
	writeFile(t, filepath.Join(m, "init-id"), []byte(ids.init), 0o644)
	writeFile(t, filepath.Join(m, "parent"), []byte(c2), 0o644)
	state, _ := json.Marshal(map[string]any{"ID": ids.container, "State": map[string]any{"Running": running}})
	writeFile(t, filepath.Join(dataRoot, "containers", ids.container, "config.v2.json"), state, 0o600)
	return root, ids
}

// ctlAsUser runs the ovlctl binary copy bin as the ordinary user.
func ctlAsUser(t *testing.T, bin, root string, args ...string) ctlResult {
	t.Helper()
	cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", bin, "--root", root}, args...)...)
	cmd.Env = append(os.Environ(), "OVLFS_BIN="+filepath.Join(filepath.Dir(bin), "ovlfs"))
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := ctlResult{out: o.String(), err: e.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// ctlUserBin copies ovlctl and ovlfs into dir, where the ordinary user may
// run them, and opens the path to dir to everyone.
func ctlUserBin(t *testing.T, dir string) string {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("SKIP: setpriv (util-linux) is missing")
	}
	for name, b := range map[string]string{"ovlctl": ctlBinary(t), "ovlfs": ovlfsBin} {
		data, err := os.ReadFile(b)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name), data, 0o755)
	}
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return filepath.Join(dir, "ovlctl")
}

// TestCtlReadOnlyCommands (issue 15, item 1): ls, inspect, df, images, diff
// and check write nothing anywhere in a store (no ovlctl/ dir, no lock, no
// changed time), and work on a read-only mount of it and for an ordinary
// user on a store of root's.
func TestCtlReadOnlyCommands(t *testing.T) {
	own := ctlSetup(t)
	top := t.TempDir()
	arc := filepath.Join(top, "img.tar")
	ctlArchive(t, arc, "ro/img:1", ctlSimpleImage()...)
	ctlOK(t, own, "import", arc)
	ctlOK(t, own, "create", "--parent", "ro/img:1", "ctr")
	os.Remove(filepath.Join(own, "ovlctl", "lock")) // left by the writers above
	docker, ids := ctlDockerStore(t, filepath.Join(top, "docker"), false)
	// Stores of root's that others may read (but not write).
	for _, d := range []string{own, filepath.Dir(docker)} {
		if out, err := exec.Command("chmod", "-R", "go+rX", d).CombinedOutput(); err != nil {
			t.Fatalf("chmod: %v %s", err, out)
		}
	}
	out := t.TempDir()
	reads := func(run func(root string, args ...string) ctlResult, root, layer, what string) {
		t.Helper()
		for _, args := range [][]string{{"ls"}, {"ls", "--json"}, {"images"}, {"df"}, {"df", "--json"},
			{"inspect", layer}, {"check"}, {"diff", layer, filepath.Join(out, "d.tar")}} {
			if r := run(root, args...); r.code != 0 {
				t.Errorf("%s: ovlctl %s on %s: exit %d: %s", what, strings.Join(args, " "), root, r.code, r.err)
			}
		}
	}
	asRoot := func(root string, args ...string) ctlResult { return ctl(t, root, nil, args...) }
	before := ctlLayerTree(t, top)
	reads(asRoot, own, "ctr", "root")
	reads(asRoot, docker, ids.ctr, "root")
	if d := ctlDiffMaps(ctlLayerTree(t, top), before); len(d) > 0 {
		t.Errorf("read-only commands changed the stores:\n  %s", strings.Join(d, "\n  "))
	}
	if _, err := os.Lstat(filepath.Join(docker, "ovlctl")); err == nil {
		t.Errorf("ovlctl made its dir in Docker's store")
	}

	// A read-only mount of the stores.
	for _, root := range []string{own, docker} {
		if err := unix.Mount(root, root, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		defer unix.Unmount(root, unix.MNT_DETACH)
		if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			t.Fatal(err)
		}
	}
	reads(asRoot, own, "ctr", "read-only mount")
	reads(asRoot, docker, ids.ctr, "read-only mount")
	for _, root := range []string{own, docker} {
		unix.Unmount(root, 0)
	}

	// An ordinary user on root's stores.
	bin := ctlUserBin(t, filepath.Join(top, "bin"))
	asUser := func(root string, args ...string) ctlResult {
		if args[0] == "diff" {
			args = append(args[:2:2], "-")
		}
		return ctlAsUser(t, bin, root, args...)
	}
	before = ctlLayerTree(t, top)
	reads(asUser, own, "ctr", "ordinary user")
	reads(asUser, docker, ids.ctr, "ordinary user")
	if d := ctlDiffMaps(ctlLayerTree(t, top), before); len(d) > 0 {
		t.Errorf("read-only commands of an ordinary user changed the stores:\n  %s", strings.Join(d, "\n  "))
	}
	// A writer says why it cannot, in one line.
	if r := ctlAsUser(t, bin, own, "create", "x"); r.code == 0 || strings.Count(strings.TrimSpace(r.err), "\n") != 0 {
		t.Errorf("create by an ordinary user on root's store: exit %d, %q", r.code, r.err)
	}
}

// TestCtlDockerReferences (item 2): on a store with Docker's layer database
// beside it, ls and df say which layers Docker's images and containers use,
// df sums up as `docker system df` does, and ids, names and container ids
// resolve.
func TestCtlDockerReferences(t *testing.T) {
	ctlSetup(t)
	root, ids := ctlDockerStore(t, filepath.Join(t.TempDir(), "docker"), true)
	var ls []struct {
		ID         string
		Images     []string
		Containers []string
		Mounted    *bool
	}
	if err := json.Unmarshal([]byte(ctlOK2(t, root, "ls", "--json")), &ls); err != nil {
		t.Fatal(err)
	}
	users := map[string]string{}
	for _, l := range ls {
		sort.Strings(l.Images)
		users[l.ID] = fmt.Sprint(l.Images, l.Containers)
	}
	want := map[string]string{
		ids.l1: "[alpine:3 busybox:latest] []", ids.l2: "[busybox:latest] []",
		ids.init: "[] [" + ids.container + "]", ids.ctr: "[] [" + ids.container + "]", ids.orphan: "[] []",
	}
	for id, w := range want {
		if users[id] != w {
			t.Errorf("ls: layer %s used by %s, want %s", id[:12], users[id], w)
		}
	}
	var u struct {
		Images, Containers struct{ Total, Active, Size, Reclaimable int64 }
		Reclaimable        int64
		Layers             []struct {
			ID    string
			Size  int64
			InUse bool `json:"in_use"`
		}
	}
	if err := json.Unmarshal([]byte(ctlOK2(t, root, "df", "--json")), &u); err != nil {
		t.Fatal(err)
	}
	size := map[string]int64{}
	for _, l := range u.Layers {
		size[l.ID] = l.Size
		if l.InUse != (l.ID != ids.orphan) {
			t.Errorf("df: layer %s in use: %v", l.ID[:12], l.InUse)
		}
	}
	if u.Images.Total != 2 || u.Images.Active != 1 || u.Images.Size != size[ids.l1]+size[ids.l2] || u.Images.Reclaimable != 0 {
		t.Errorf("df images: %+v", u.Images)
	}
	if u.Containers.Total != 1 || u.Containers.Active != 1 || u.Containers.Size != size[ids.ctr]+size[ids.init] || u.Containers.Reclaimable != 0 {
		t.Errorf("df containers: %+v", u.Containers)
	}
	if u.Reclaimable != size[ids.orphan] || size[ids.orphan] < 50000 {
		t.Errorf("df: reclaimable %d, want the orphan's %d", u.Reclaimable, size[ids.orphan])
	}
	r := ctl(t, root, nil, "df")
	for _, w := range []string{"TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE", "\nImages ", "\nContainers "} {
		if !strings.Contains(r.out, w) {
			t.Errorf("df does not show %q:\n%s", w, r.out)
		}
	}
	// Names, image ids and container ids (and prefixes) mean layers.
	for ref, want := range map[string]string{"busybox": ids.l2, "busybox:latest": ids.l2, "alpine:3": ids.l1,
		ids.busyboxID[7:19]: ids.l2, ids.container[:8]: ids.ctr, ids.orphan[:10]: ids.orphan} {
		var info []struct{ Id string }
		if err := json.Unmarshal([]byte(ctlOK2(t, root, "inspect", ref)), &info); err != nil || len(info) != 1 || info[0].Id != want {
			t.Errorf("inspect %s: %+v %v, want layer %s", ref, info, err, want[:12])
		}
	}
	images := ctlOK2(t, root, "images")
	if !strings.Contains(images, "busybox:latest") || !strings.Contains(images, "alpine:3") {
		t.Errorf("images:\n%s", images)
	}
	// What would change Docker's records is refused.
	for _, args := range [][]string{{"prune"}, {"rmi", "alpine:3"}} {
		if r := ctl(t, root, nil, args...); r.code == 0 || !strings.Contains(r.err, "Docker") {
			t.Errorf("ovlctl %v on Docker's store: exit %d %q", args, r.code, r.err)
		}
	}
}

// ctlOK2 runs ovlctl and returns all of stdout.
func ctlOK2(t testing.TB, root string, args ...string) string {
	t.Helper()
	r := ctl(t, root, nil, args...)
	if r.code != 0 {
		t.Fatalf("ovlctl %s: exit %d\n%s", strings.Join(args, " "), r.code, r.err)
	}
	return r.out
}

// ctlTarHeaders reads the headers of a tarball by name.
func ctlTarHeaders(t *testing.T, b []byte) map[string]*tar.Header {
	t.Helper()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = h
	}
}

// TestCtlRootlessOwners (item 3): an ordinary user applies a tar of files
// owned 0:0 and 33:33 (one setuid); the owners and modes are kept in
// user.containers.override_stat as containers/storage writes it, ovlfs shows
// them, diff exports them exactly, and what cannot be kept (a device node; a
// symlink's owner) is said in one line.
func TestCtlRootlessOwners(t *testing.T) {
	requireMount(t)
	top := t.TempDir()
	bin := ctlUserBin(t, filepath.Join(top, "bin"))
	root := filepath.Join(top, "store")
	mkdirMode(t, root, 0o755)
	chown(t, root, rootlessUID, rootlessUID)
	in := ctlTar(
		ctlEnt{name: "./", typ: tar.TypeDir, mode: 0o755},
		ctlEnt{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		ctlEnt{name: "etc/shadow", body: "s", mode: 0o640, gid: 42},
		ctlEnt{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		ctlEnt{name: "bin/su", body: "su", mode: 0o4755},
		ctlEnt{name: "var/www/", typ: tar.TypeDir, mode: 0o750, uid: 33, gid: 33},
		ctlEnt{name: "var/www/index.html", body: "hi", mode: 0o644, uid: 33, gid: 33},
		ctlEnt{name: "home/nobody/own", body: "mine", mode: 0o600, uid: rootlessUID, gid: rootlessUID},
	)
	tarFile := filepath.Join(top, "in.tar")
	writeFile(t, tarFile, in, 0o644)
	if r := ctlAsUser(t, bin, root, "create", "lay"); r.code != 0 {
		t.Fatal(r.err)
	}
	r := ctlAsUser(t, bin, root, "apply", "lay", tarFile)
	if r.code != 0 || r.err != "" {
		t.Fatalf("apply as an ordinary user: exit %d, stderr %q", r.code, r.err)
	}
	for p, want := range map[string]string{"bin/su": "0:0:4755:file", "var/www": "33:33:0750:dir", "var/www/index.html": "33:33:0644:file",
		"etc/shadow": "0:42:0640:file", "": "0:0:0755:dir"} {
		v, err := getXattr(filepath.Join(root, "lay/diff", p), "user.containers.override_stat")
		if string(v) != want {
			t.Errorf("%s: user.containers.override_stat = %q (%v), want %q", p, v, err, want)
		}
	}
	var st unix.Stat_t
	unix.Lstat(filepath.Join(root, "lay/diff/bin/su"), &st)
	if st.Uid != rootlessUID || st.Mode&0o7000 != 0 {
		t.Errorf("bin/su on disk: uid %d mode %o: want the user's, without set-ID bits", st.Uid, st.Mode&0o7777)
	}
	if _, err := getXattr(filepath.Join(root, "lay/diff/home/nobody/own"), "user.containers.override_stat"); err == nil {
		t.Errorf("home/nobody/own (the user's own) got an override")
	}
	r = ctlAsUser(t, bin, root, "diff", "lay", "-")
	if r.code != 0 {
		t.Fatalf("diff: %s", r.err)
	}
	got, want := ctlTarHeaders(t, []byte(r.out)), ctlTarHeaders(t, in)
	for name, w := range want {
		g := got[name]
		if g == nil || g.Uid != w.Uid || g.Gid != w.Gid || g.Mode != w.Mode {
			t.Errorf("diff: %s: got %+v, want uid %d gid %d mode %o", name, g, w.Uid, w.Gid, w.Mode)
			continue
		}
		if _, ok := g.PAXRecords["SCHILY.xattr.user.containers.override_stat"]; ok {
			t.Errorf("diff: %s exports the override xattr", name)
		}
	}
	// ovlfs shows the owners (when ordinary users may use FUSE here).
	var fst unix.Stat_t
	if unix.Stat("/dev/fuse", &fst) == nil && fst.Mode&0o006 == 0o006 {
		if r := ctlAsUser(t, bin, root, "create", "--parent", "lay", "c"); r.code != 0 {
			t.Fatal(r.err)
		}
		r := ctlAsUser(t, bin, root, "mount", "--driver", "fuse", "c")
		mnt := strings.TrimSpace(r.out)
		if r.code != 0 {
			t.Fatalf("mount as the user: %s", r.err)
		}
		defer func() {
			if isMounted(mnt) {
				ctlAsUser(t, bin, root, "umount", "c")
			}
		}()
		// Only the user may look into its FUSE mount.
		out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
			"stat", "-c", "%n %u:%g %a", filepath.Join(mnt, "bin/su"), filepath.Join(mnt, "var/www"), filepath.Join(mnt, "etc/shadow")).CombinedOutput()
		want := fmt.Sprintf("%[1]s/bin/su 0:0 4755\n%[1]s/var/www 33:33 750\n%[1]s/etc/shadow 0:42 640\n", mnt)
		if err != nil || string(out) != want {
			t.Errorf("the ovlfs mount shows (%v)\n%s\nwant\n%s", err, out, want)
		}
		ctlAsUser(t, bin, root, "umount", "c")
	}
	// What cannot be kept: said in one line.
	if r := ctlAsUser(t, bin, root, "create", "dev"); r.code != 0 {
		t.Fatal(r.err)
	}
	var dev bytes.Buffer
	tw := tar.NewWriter(&dev)
	tw.WriteHeader(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, Format: tar.FormatPAX})
	tw.Close()
	writeFile(t, tarFile, dev.Bytes(), 0o644)
	r = ctlAsUser(t, bin, root, "apply", "dev", tarFile)
	if r.code == 0 || strings.Count(strings.TrimSpace(r.err), "\n") != 0 || !strings.Contains(r.err, "device node") {
		t.Errorf("a device node as an ordinary user: exit %d, %q", r.code, r.err)
	}
	if r := ctlAsUser(t, bin, root, "create", "sym"); r.code != 0 {
		t.Fatal(r.err)
	}
	writeFile(t, tarFile, ctlTar(ctlEnt{name: "bin/sh", typ: tar.TypeSymlink, link: "busybox"}), 0o644)
	r = ctlAsUser(t, bin, root, "apply", "sym", tarFile)
	if r.code != 0 || strings.Count(strings.TrimSpace(r.err), "\n") != 0 || !strings.Contains(r.err, "bin/sh") {
		t.Errorf("a root-owned symlink as an ordinary user: exit %d, want one warning line, got %q", r.code, r.err)
	}
}

// TestCtlRootMode (item 4): a layer tar without a "./" entry gives a 0755
// layer root: on disk, mounted (both drivers), and in diff.
func TestCtlRootMode(t *testing.T) {
	root := ctlSetup(t)
	old := unix.Umask(0o077) // the root must not depend on it
	defer unix.Umask(old)
	ctlOK(t, root, "create", "base")
	if r := ctl(t, root, ctlTar(ctlEnt{name: "etc/os-release", body: "x"}), "apply", "base", "-"); r.code != 0 {
		t.Fatal(r.err)
	}
	ctlOK(t, root, "create", "--parent", "base", "top")
	for _, p := range []string{"base/diff", "base/diff/etc", "top/diff"} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(root, p), &st); err != nil || st.Mode&0o7777 != 0o755 {
			t.Errorf("%s: mode %o (%v), want 0755", p, st.Mode&0o7777, err)
		}
	}
	for _, driver := range []string{"kernel", "fuse"} {
		mnt := ctlMount(t, root, "top", "--driver", driver)
		var st unix.Stat_t
		if err := unix.Stat(mnt, &st); err != nil || st.Mode&0o7777 != 0o755 {
			t.Errorf("%s mount root: mode %o (%v), want 0755", driver, st.Mode&0o7777, err)
		}
		ctlUmount(t, root, "top")
	}
	r := ctl(t, root, nil, "diff", "base", "-")
	if h := ctlTarHeaders(t, []byte(r.out))[""]; r.code != 0 || h == nil || h.Mode != 0o755 {
		t.Errorf("diff of base: root entry %+v (%s)", h, r.err)
	}
}

// TestCtlCheckOwnScratch (item 5): what ovlfs keeps in its work dir on
// purpose (work/ovlfs and its shared whiteout) is no fault; real stale
// scratch still is.
func TestCtlCheckOwnScratch(t *testing.T) {
	root := ctlSetup(t)
	ctlOK(t, root, "create", "base")
	if r := ctl(t, root, ctlTar(ctlEnt{name: "f", body: "f"}, ctlEnt{name: "g", body: "g"}), "apply", "base", "-"); r.code != 0 {
		t.Fatal(r.err)
	}
	ctlOK(t, root, "create", "--parent", "base", "top")
	mnt := ctlMount(t, root, "top", "--driver", "fuse")
	if err := os.Remove(filepath.Join(mnt, "f")); err != nil {
		t.Fatal(err)
	}
	ctlUmount(t, root, "top")
	if _, err := os.Lstat(filepath.Join(root, "top/work/ovlfs/whiteout")); err != nil {
		t.Fatalf("ovlfs left no shared whiteout (the case this test is about): %v", err)
	}
	if r := ctl(t, root, nil, "check"); r.code != 0 || strings.TrimSpace(r.out) != "no faults" {
		t.Errorf("check after a fuse session that deleted a lower file: exit %d\n%s%s", r.code, r.out, r.err)
	}
	writeFile(t, filepath.Join(root, "top/work/ovlfs/#123.4"), []byte("half"), 0o600)
	if r := ctl(t, root, nil, "check"); r.code == 0 || !strings.Contains(r.out, "#123.4") || strings.Contains(r.out, "whiteout") {
		t.Errorf("check with a real stale scratch file: exit %d\n%s%s", r.code, r.out, r.err)
	}
}

// TestCtlIDs (item 6): unique prefixes and image names are taken wherever a
// layer is meant, an ambiguous prefix gets one line, ls prints short ids
// (whole with --no-trunc) and --json says whether a layer is mounted.
func TestCtlIDs(t *testing.T) {
	root := ctlSetup(t)
	arc := filepath.Join(t.TempDir(), "img.tar")
	ctlArchive(t, arc, "ids/img:1", ctlSimpleImage()...)
	ctlOK(t, root, "import", arc)
	var imgs []struct{ ID, Top string }
	json.Unmarshal([]byte(ctlOK2(t, root, "images", "--json")), &imgs)
	if len(imgs) != 1 {
		t.Fatalf("images: %+v", imgs)
	}
	top := imgs[0].Top
	ctlOK(t, root, "create", "--parent", "ids/img:1", "byname")
	ctlOK(t, root, "create", "--parent", top[:12], "byprefix")
	ctlOK(t, root, "create", "--parent", strings.TrimPrefix(imgs[0].ID, "sha256:")[:12], "byimageid")
	for _, id := range []string{"byname", "byprefix", "byimageid"} {
		var info []struct{ Parent string }
		json.Unmarshal([]byte(ctlOK2(t, root, "inspect", id)), &info)
		if len(info) != 1 || info[0].Parent != top {
			t.Errorf("%s: parent %+v, want %s", id, info, top)
		}
	}
	ctlOK(t, root, "create", "abc1")
	ctlOK(t, root, "create", "abc2")
	r := ctl(t, root, nil, "inspect", "abc")
	if r.code == 0 || strings.Count(strings.TrimSpace(r.err), "\n") != 0 || !strings.Contains(r.err, "ambiguous") {
		t.Errorf("an ambiguous prefix: exit %d %q", r.code, r.err)
	}
	mnt := ctlMount(t, root, "byna", "--driver", "kernel")
	out := ctlOK2(t, root, "ls")
	if !strings.Contains(out, top[:12]+" ") || strings.Contains(out, top) {
		t.Errorf("ls does not print 12-character ids:\n%s", out)
	}
	if out := ctlOK2(t, root, "ls", "--no-trunc"); !strings.Contains(out, top) {
		t.Errorf("ls --no-trunc:\n%s", out)
	}
	var ls []map[string]any
	json.Unmarshal([]byte(ctlOK2(t, root, "ls", "--json")), &ls)
	for _, l := range ls {
		want := l["id"] == "byname"
		if m, ok := l["mounted"].(bool); !ok || m != want {
			t.Errorf("ls --json: %v: mounted %v, want %v", l["id"], l["mounted"], want)
		}
		if want && l["mount_point"] != mnt {
			t.Errorf("ls --json: mount_point %v, want %s", l["mount_point"], mnt)
		}
	}
	ctlUmount(t, root, "byname")
}

// TestCtlVerbs (item 7): rmi, prune, images with SIZE and CREATED, inspect
// in docker's shape, progress of apply and diff on a terminal, --name checked.
func TestCtlVerbs(t *testing.T) {
	root := ctlSetup(t)
	dir := t.TempDir()
	arc := filepath.Join(dir, "img.tar")
	ctlArchive(t, arc, "verbs/a:1", ctlSimpleImage()...)
	ctlOK(t, root, "import", arc)
	ctlArchive(t, arc, "verbs/b:1", ctlSimpleImage()[0], ctlTar(ctlEnt{name: "b", body: "b"}))
	ctlOK(t, root, "import", arc)
	out := ctlOK2(t, root, "images")
	if !strings.Contains(out, "CREATED") || !strings.Contains(out, "SIZE") || !strings.Contains(out, "KiB") {
		t.Errorf("images:\n%s", out)
	}
	var info []struct {
		Id          string
		GraphDriver struct {
			Name string
			Data map[string]string
		}
	}
	if err := json.Unmarshal([]byte(ctlOK2(t, root, "inspect", "verbs/a:1")), &info); err != nil || len(info) != 1 {
		t.Fatalf("inspect: %v %+v", err, info)
	}
	d := info[0].GraphDriver
	if d.Name != "overlay" || d.Data["UpperDir"] != filepath.Join(root, info[0].Id, "diff") || d.Data["LowerDir"] == "" ||
		d.Data["WorkDir"] == "" || d.Data["MergedDir"] == "" {
		t.Errorf("inspect GraphDriver: %+v", d)
	}
	// rmi: a's top goes, the base that b shares stays; a container on b
	// keeps b.
	ctlOK(t, root, "create", "--parent", "verbs/b:1", "ctr")
	if r := ctl(t, root, nil, "rmi", "verbs/b:1"); r.code == 0 {
		t.Error("rmi of an image a layer sits on succeeded")
	}
	before := strings.Count(ctlOK2(t, root, "ls", "--json"), `"id"`)
	rmi := ctlOK2(t, root, "rmi", "verbs/a:1")
	if strings.Count(rmi, "removed layer") != 1 || strings.Count(ctlOK2(t, root, "ls", "--json"), `"id"`) != before-1 {
		t.Errorf("rmi verbs/a:1 removed:\n%s", rmi)
	}
	if out := ctlOK2(t, root, "images"); strings.Contains(out, "verbs/a:1") || !strings.Contains(out, "verbs/b:1") {
		t.Errorf("images after rmi:\n%s", out)
	}
	// prune: the loose layers go, not the image's, the mounted one, nor the
	// container's.
	ctlOK(t, root, "create", "loose")
	ctlOK(t, root, "create", "--parent", "loose", "loose2")
	ctlOK(t, root, "create", "keepmounted")
	ctlMount(t, root, "keepmounted", "--driver", "kernel")
	ctlOK(t, root, "init", "--parent", "verbs/b:1", "box")
	pr := ctlOK2(t, root, "prune")
	for _, id := range []string{"loose", "loose2", "ctr"} {
		if !strings.Contains(pr, "removed layer "+id+"\n") {
			t.Errorf("prune did not remove %s:\n%s", id, pr)
		}
	}
	ls := ctlOK2(t, root, "ls", "--json")
	for _, id := range []string{"keepmounted", "box", "box-init"} {
		if !strings.Contains(ls, `"id": "`+id+`"`) {
			t.Errorf("prune removed %s", id)
		}
	}
	if strings.Count(ls, `"images"`) != 2 {
		t.Errorf("prune removed a layer of verbs/b:1:\n%s", ls)
	}
	ctlUmount(t, root, "keepmounted")
	// --name is a docker reference.
	for _, bad := range []string{"Upper/case", "sp ace", "a//b", "-x", "a:b:c"} {
		r := ctl(t, root, nil, "import", "--name", bad, arc)
		if r.code == 0 || strings.Count(strings.TrimSpace(r.err), "\n") != 0 || !strings.Contains(r.err, "invalid image name") {
			t.Errorf("--name %q: exit %d %q", bad, r.code, r.err)
		}
	}
	ctlOK(t, root, "import", "--name", "registry.example.com:5000/team/app_1.x:v1.0-rc", arc)
	// Progress on a terminal: apply and diff draw it on stderr.
	big := ctlTar(ctlEnt{name: "big", body: strings.Repeat("x", 4<<20)})
	writeFile(t, filepath.Join(dir, "big.tar"), big, 0o644)
	ctlOK(t, root, "create", "big")
	for _, args := range [][]string{{"apply", "big", filepath.Join(dir, "big.tar")}, {"diff", "big", filepath.Join(dir, "out.tar")}} {
		stderr := ctlOnTTY(t, root, args...)
		if !strings.Contains(stderr, args[0]+" big") || !strings.Contains(stderr, "MiB") {
			t.Errorf("ovlctl %s on a terminal drew no progress: %q", args[0], stderr)
		}
	}
}

// ctlOnTTY runs ovlctl with stderr on a pseudo-terminal and returns what it
// wrote there.
func ctlOnTTY(t *testing.T, root string, args ...string) string {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("SKIP: no pseudo-terminals: %v", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ctlBinary(t), append([]string{"--root", root}, args...)...)
	cmd.Stderr = pts
	var out bytes.Buffer
	cmd.Stdout = &out
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(ptmx)
		done <- b
	}()
	err = cmd.Run()
	pts.Close()
	got := <-done // EIO once the last slave fd is closed
	if err != nil {
		t.Fatalf("ovlctl %v: %v: %s", args, err, got)
	}
	return string(got)
}

// TestCtlHelpAndInput (item 8): per-command help exits 0, --root without a
// value, import from stdin, a truncated archive and a digest mismatch each
// get one clear line.
func TestCtlHelpAndInput(t *testing.T) {
	root := ctlSetup(t)
	for _, c := range []string{"create", "apply", "diff", "import", "images", "rmi", "mount", "umount", "rm", "prune", "ls", "inspect", "df", "init", "check"} {
		for _, h := range []string{"--help", "-h"} {
			r := ctl(t, root, nil, c, h)
			if r.code != 0 || !strings.Contains(r.out, "usage: ovlctl [--root DIR] "+c) || r.err != "" {
				t.Errorf("ovlctl %s %s: exit %d, out %q, err %q", c, h, r.code, r.out, r.err)
			}
		}
	}
	oneLine := func(r ctlResult, what, want string) {
		t.Helper()
		lines := strings.Split(strings.TrimRight(r.err, "\n"), "\n")
		if r.code == 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "ovlctl: ") || !strings.Contains(lines[0], want) {
			t.Errorf("%s: exit %d, stderr %q; want one line with %q", what, r.code, r.err, want)
		}
	}
	cmd := exec.Command(ctlBinary(t), "ls", "--root")
	var e bytes.Buffer
	cmd.Stderr = &e
	err := cmd.Run()
	oneLine(ctlResult{err: e.String(), code: map[bool]int{true: 0, false: 1}[err == nil]}, "ls --root", "--root")
	cmd = exec.Command(ctlBinary(t), "--root")
	e.Reset()
	cmd.Stderr = &e
	err = cmd.Run()
	oneLine(ctlResult{err: e.String(), code: map[bool]int{true: 0, false: 1}[err == nil]}, "--root", "--root needs a directory")

	dir := t.TempDir()
	arc := filepath.Join(dir, "img.tar")
	ctlArchive(t, arc, "stdin/img:1", ctlSimpleImage()...)
	data, _ := os.ReadFile(arc)
	// A pipe, not a file: the archive is spooled.
	if r := ctl(t, root, data, "import", "-"); r.code != 0 || !strings.HasPrefix(r.out, "stdin/img:1 sha256:") {
		t.Errorf("import - (a pipe): exit %d %q %q", r.code, r.out, r.err)
	}
	if names, _ := readdirNames(filepath.Join(root, "ovlctl")); strings.Contains(strings.Join(names, " "), "tmp") {
		t.Errorf("import - left %v", names)
	}
	writeFile(t, arc, data[:len(data)/2+7], 0o644) // inside a member, not at a header
	oneLine(ctl(t, root, nil, "import", arc), "a truncated archive", "truncated")
	ctlOK(t, root, "create", "trunc")
	layer := ctlTar(ctlEnt{name: "f", body: strings.Repeat("y", 10000)})
	oneLine(ctl(t, root, layer[:5000], "apply", "trunc", "-"), "a truncated layer", "truncated")
	// A layer whose digest is not the config's: "layer X:" once.
	l := [][]byte{ctlTar(ctlEnt{name: "x", body: "top"})} // in no image yet
	ctlArchive(t, arc, "bad/img:1", l...)
	data, _ = os.ReadFile(arc)
	good := ctlSha(l[0])
	bad := bytes.Replace(l[0], []byte("top"), []byte("TOP"), 1) // same size, other bytes
	i := bytes.Index(data, l[0])
	copy(data[i:], bad)
	writeFile(t, arc, data, 0o644)
	r := ctl(t, root, nil, "import", arc)
	oneLine(r, "a digest mismatch", "digest")
	if strings.Count(r.err, "layer "+good) != 1 {
		t.Errorf("digest error names the layer %d times: %q", strings.Count(r.err, "layer "+good), r.err)
	}
}

// TestCtlDockerFuseOverlayfsStore: Docker's rootless fuse-overlayfs driver
// applies image layers with `.wh.` files (fuse-overlayfs and ovlfs read
// them). In that store they are the layers' format: check finds no fault
// and diff exports them as whiteouts; in an overlay2 store they are faults.
func TestCtlDockerFuseOverlayfsStore(t *testing.T) {
	ctlSetup(t)
	for _, driver := range []string{"overlay2", "fuse-overlayfs"} {
		t.Run(driver, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "docker")
			root, ids := ctlDockerStore(t, data, false)
			if driver != "overlay2" {
				for _, d := range []string{"", "image"} {
					if err := os.Rename(filepath.Join(data, d, "overlay2"), filepath.Join(data, d, driver)); err != nil {
						t.Fatal(err)
					}
				}
				root = filepath.Join(data, driver)
			}
			diff := filepath.Join(root, ids.l2, "diff")
			writeFile(t, filepath.Join(diff, "etc/.wh.os-release"), nil, 0o644)
			mkdirs(t, filepath.Join(diff, "opq"))
			writeFile(t, filepath.Join(diff, "opq/.wh..wh..opq"), nil, 0o644)
			check := ctl(t, root, nil, "check")
			if driver == "overlay2" {
				if check.code == 0 || !strings.Contains(check.out+check.err, ".wh. whiteout file") {
					t.Errorf("check of an overlay2 store with .wh. files: exit %d\n%s%s", check.code, check.out, check.err)
				}
				return
			}
			if check.code != 0 {
				t.Errorf("check: exit %d\n%s%s", check.code, check.out, check.err)
			}
			hs := ctlTarHeaders(t, []byte(ctlOK2(t, root, "diff", ids.l2)))
			for _, n := range []string{"etc/.wh.os-release", "opq/.wh..wh..opq", "bin/busybox"} {
				if hs[n] == nil {
					t.Errorf("diff of the fuse-overlayfs store's layer lacks %s", n)
				}
			}
		})
	}
}
