package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// compareLowers mounts the kernel overlay and ovlfs at once on the same
// read-only lowers and compares the trees; hidden paths must be hidden in both.
func compareLowers(t *testing.T, what string, lowers []string, hidden []string) {
	t.Helper()
	k := mountKernel(t, lowers, "", "")
	o := mountOvlfs(t, lowers, "", "")
	want := snapshot(t, k)
	checkHidden(t, k, hidden...) // proves the layers are what we think
	requireSameTree(t, what, snapshot(t, o), want)
	checkHidden(t, o, hidden...)
}

// compareWithUpper mounts ovlfs, then (after unmounting it) the kernel, on
// the same lowers+upper+work, and compares what they showed.
func compareWithUpper(t *testing.T, what string, lowers []string, upper, work string, hidden []string, kopts ...string) {
	t.Helper()
	o := mountOvlfs(t, lowers, upper, work)
	got := snapshot(t, o)
	checkHidden(t, o, hidden...)
	unmountFuse(t, o)
	k := mountKernel(t, lowers, upper, work, kopts...)
	want := snapshot(t, k)
	checkHidden(t, k, hidden...)
	if err := unix.Unmount(k, 0); err != nil {
		t.Fatalf("umount %s: %v", k, err)
	}
	requireSameTree(t, what, got, want)
}

func TestEquivRandom(t *testing.T) {
	requireMount(t)
	seeds := 30
	if isLong() {
		seeds = 300
	}
	for seed := int64(1); seed <= int64(seeds); seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			n := 2 + int(seed%5)
			dir := t.TempDir()
			lowers, hidden := randomLayers(t, dir, seed, n)
			what := fmt.Sprintf("seed %d, %d layers in %s", seed, n, dir)
			if seed%3 == 0 {
				// The topmost layer as upperdir; mounts one after the other.
				work := filepath.Join(dir, "work")
				mkdirs(t, work)
				compareWithUpper(t, what+" (top layer as upperdir)", lowers[1:], lowers[0], work, hidden)
				return
			}
			compareLowers(t, what, lowers, hidden)
		})
	}
}

// deepLayers makes n layers that each add and white out a few names in shared
// directories; it returns them topmost first, and the hidden paths.
func deepLayers(t *testing.T, dir string, n int) (lowers, hidden []string) {
	visible := map[string]bool{}
	for i := 0; i < n; i++ {
		l := filepath.Join(dir, fmt.Sprintf("layer-with-a-long-name-%03d", i))
		mkdirs(t, l)
		lowers = append([]string{l}, lowers...)
		writeFile(t, filepath.Join(l, "shared", fmt.Sprintf("f%03d", i)), []byte(fmt.Sprintf("layer %d\n", i)), 0o644)
		writeFile(t, filepath.Join(l, "shared", "common"), []byte(fmt.Sprintf("common from %d\n", i)), 0o644)
		writeFile(t, filepath.Join(l, "shared", fmt.Sprintf("d%d", i%7), fmt.Sprintf("g%03d", i)), []byte("g"), 0o600)
		visible[fmt.Sprintf("shared/f%03d", i)] = true
		visible[fmt.Sprintf("shared/d%d/g%03d", i%7, i)] = true
		if i > 0 && i%3 == 0 {
			w := fmt.Sprintf("shared/f%03d", i-2)
			mkWhiteout(t, filepath.Join(l, w))
			delete(visible, w)
		}
		if i > 7 && i%5 == 0 {
			w := fmt.Sprintf("shared/d%d/g%03d", (i-7)%7, i-7)
			mkdirs(t, filepath.Join(l, filepath.Dir(w)))
			mkWhiteout(t, filepath.Join(l, w))
			delete(visible, w)
		}
		if i > 0 && i%20 == 0 { // an opaque dir now and then
			o := filepath.Join(l, "shared", "opq")
			mkdirMode(t, o, 0o755)
			setOpaque(t, o)
			writeFile(t, filepath.Join(o, fmt.Sprintf("o%03d", i)), nil, 0o644)
		} else if i%20 == 10 {
			writeFile(t, filepath.Join(l, "shared", "opq", fmt.Sprintf("o%03d", i)), nil, 0o644)
		}
	}
	for i := 0; i < n; i++ {
		for _, p := range []string{fmt.Sprintf("shared/f%03d", i), fmt.Sprintf("shared/d%d/g%03d", i%7, i)} {
			if !visible[p] {
				hidden = append(hidden, p)
			}
		}
	}
	return lowers, hidden
}

func TestEquivDeepStack(t *testing.T) {
	requireMount(t)
	for _, n := range []int{120, 150} {
		t.Run(fmt.Sprint(n, "layers"), func(t *testing.T) {
			dir := t.TempDir()
			lowers, hidden := deepLayers(t, dir, n)
			compareLowers(t, fmt.Sprintf("%d lowers in %s", n, dir), lowers, hidden)
		})
	}
}

// whiteoutOpaqueLayers writes the hand-made layers of TestEquivWhiteoutsOpaque,
// bottom (l0) to top (l2), and returns them topmost first with the hidden paths.
func whiteoutOpaqueLayers(t *testing.T, dir string) (lowers, hidden []string) {
	l0, l1, l2 := filepath.Join(dir, "l0"), filepath.Join(dir, "l1"), filepath.Join(dir, "l2")
	for _, l := range []string{l0, l1, l2} {
		mkdirs(t, l)
	}
	j := filepath.Join
	for _, p := range []string{"f1", "f2", "f3", "d1/x", "d1/y", "d1/sub/z", "d2/a", "d2/b", "d3/c",
		"deep/a/b/c/k1", "deep/a/b/c/k2", "deep/a/b/c2/old", "deep/x/y/old", "deep/x/keep",
		"fileThenDir", "dirThenFile/q", "op1/old1", "op1/old2", "op2/old", "xo/keep1",
		"junk1/j", "junk2/j", "junk3/j", "junk4/j", "junk5/j", "wo/file", "xo/gone"} {
		writeFile(t, j(l0, p), []byte("l0 "+p+"\n"), 0o644)
	}
	mkDevice(t, j(l0, "dev/null"), unix.S_IFCHR, 1, 3)
	mkDevice(t, j(l0, "dev/loop0"), unix.S_IFBLK, 7, 0)

	// l1: whiteouts (the first a plain mknod, the others hard links of it),
	// opaque dirs at several depths, a file over a dir and a dir over a file.
	mkWhiteout(t, j(l1, "f1"))
	hardlink(t, j(l1, "f1"), j(l1, "d1/x"))
	hardlink(t, j(l1, "f1"), j(l1, "d2"))
	hardlink(t, j(l1, "f1"), j(l1, "deep/a/b/c/k1"))
	hardlink(t, j(l1, "f1"), j(l1, "d3"))
	mkdirMode(t, j(l1, "op1"), 0o750)
	setOpaque(t, j(l1, "op1"))
	writeFile(t, j(l1, "op1/new1"), []byte("l1 new1"), 0o600)
	mkdirMode(t, j(l1, "deep/a/b/c2"), 0o700)
	setOpaque(t, j(l1, "deep/a/b/c2"))
	writeFile(t, j(l1, "deep/a/b/c2/new"), []byte("l1 c2 new"), 0o644)
	mkdirMode(t, j(l1, "fileThenDir"), 0o711)
	writeFile(t, j(l1, "fileThenDir/c1"), []byte("c1"), 0o644)
	writeFile(t, j(l1, "dirThenFile"), []byte("now a file"), 0o640)
	mkdirMode(t, j(l1, "xo"), 0o755)
	setXattr(t, j(l1, "xo"), "trusted.overlay.opaque", []byte("x")) // not opaque
	writeFile(t, j(l1, "xo/keep2"), []byte("keep2"), 0o644)
	// Kernel 6.8+ xattr whiteout: a zero-size file with X(whiteout) in a dir
	// whose X(opaque) is "x", in a lower layer.
	writeFile(t, j(l1, "xo/gone"), nil, 0o644)
	setXattr(t, j(l1, "xo/gone"), "trusted.overlay.whiteout", nil)
	for name, v := range map[string]string{"junk1": "yes", "junk2": "", "junk3": "n", "junk4": "Y", "junk5": "y\n"} {
		mkdirMode(t, j(l1, name), 0o755)
		setXattr(t, j(l1, name), "trusted.overlay.opaque", []byte(v))
		writeFile(t, j(l1, name, "more"), []byte(name), 0o644)
	}
	// Not tested: the same file in a dir without opaque=x. Kernel 6.18 lists
	// it in readdir but fails its lookup with ENOENT (inconsistent).
	// A whiteout with an unusual mode and owner is still a whiteout.
	mkdirs(t, j(l1, "wo"))
	if err := unix.Mknod(j(l1, "wo/file"), unix.S_IFCHR|0o644, 0); err != nil {
		t.Fatal(err)
	}
	chown(t, j(l1, "wo/file"), 1000, 1000)
	// A whiteout over a name nothing below provides, in a merged dir.
	mkWhiteout(t, j(l1, "wo/never-existed"))

	// l2: a dir over a whiteout (only l2's content), opaque dirs, a real char
	// device over a lower file, a deep opaque dir.
	writeFile(t, j(l2, "d3/new"), []byte("l2 d3 new"), 0o644)
	mkdirMode(t, j(l2, "op2"), 0o755)
	setOpaque(t, j(l2, "op2"))
	writeFile(t, j(l2, "op2/mine"), []byte("l2 op2"), 0o644)
	mkDevice(t, j(l2, "f2"), unix.S_IFCHR, 1, 5)
	mkdirMode(t, j(l2, "deep/x/y"), 0o755)
	setOpaque(t, j(l2, "deep/x/y"))
	writeFile(t, j(l2, "deep/x/y/fresh"), nil, 0o644)
	mkdirMode(t, j(l2, "emptyopaque"), 0o755)
	setOpaque(t, j(l2, "emptyopaque"))

	hidden = []string{"f1", "d1/x", "d2", "deep/a/b/c/k1", "d3/c", "op1/old1", "op2/old",
		"deep/a/b/c2/old", "deep/x/y/old", "wo/file", "wo/never-existed", "xo/gone"}
	return []string{l2, l1, l0}, hidden
}

func TestEquivWhiteoutsOpaque(t *testing.T) {
	requireMount(t)
	dir := t.TempDir()
	lowers, hidden := whiteoutOpaqueLayers(t, dir)
	compareLowers(t, "hand-made whiteout/opaque layers", lowers, hidden)
}

// TestEquivOpaqueRoot: X(opaque) on a layer's root directory.
func TestEquivOpaqueRoot(t *testing.T) {
	requireMount(t)
	dir := t.TempDir()
	l0, l1 := filepath.Join(dir, "l0"), filepath.Join(dir, "l1")
	writeFile(t, filepath.Join(l0, "below"), []byte("below"), 0o644)
	writeFile(t, filepath.Join(l0, "d", "below"), []byte("below"), 0o644)
	writeFile(t, filepath.Join(l1, "above"), []byte("above"), 0o644)
	writeFile(t, filepath.Join(l1, "d", "above"), []byte("above"), 0o644)
	setOpaque(t, l1)
	compareLowers(t, "opaque xattr on the top layer's root", []string{l1, l0}, nil)
}

func TestEquivUpperAsTop(t *testing.T) {
	requireMount(t)
	t.Run("handmade", func(t *testing.T) {
		dir := t.TempDir()
		lowers, hidden := whiteoutOpaqueLayers(t, dir)
		work := filepath.Join(dir, "work")
		mkdirs(t, work)
		compareWithUpper(t, "hand-made layers, top as upperdir", lowers[1:], lowers[0], work, hidden)
	})
	for _, seed := range []int64{101, 102, 103, 104} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			dir := t.TempDir()
			lowers, hidden := randomLayers(t, dir, seed, 3)
			work := filepath.Join(dir, "work")
			mkdirs(t, work)
			compareWithUpper(t, fmt.Sprintf("seed %d, top as upperdir", seed), lowers[1:], lowers[0], work, hidden)
		})
	}
}

// overlayXattrs runs getfattr on the tree and returns its trusted.overlay.* dump.
func overlayXattrs(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("getfattr", "-R", "-P", "-d", "-m", "^trusted\\.overlay\\.", "-e", "text", "--absolute-names", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("getfattr -R %s: %v\n%s", dir, err, out)
	}
	return string(out)
}

func TestEquivKernelWritten(t *testing.T) {
	requireMount(t)
	dir := t.TempDir()
	j := filepath.Join
	l0, l1, upper, work := j(dir, "l0"), j(dir, "l1"), j(dir, "upper"), j(dir, "work")
	for _, d := range []string{l0, l1, upper, work} {
		mkdirs(t, d)
	}
	big := bytes.Repeat([]byte("metacopy data 0123456789\n"), 20000) // 500 KB
	data := map[string][]byte{}
	put := func(layer, p string, b []byte) {
		writeFile(t, j(layer, p), b, 0o644)
		data[p] = b
	}
	put(l0, "f1", []byte("f1 data\n"))
	put(l0, "f2", big)
	put(l0, "f3", []byte("f3 data\n"))
	put(l0, "f4", []byte("f4 data\n"))
	put(l0, "dA/inner", []byte("dA inner\n"))
	put(l0, "dA/sub/deeper", []byte("dA deeper\n"))
	put(l1, "p1/dB/inner", []byte("dB inner\n"))
	put(l1, "p1/dB/big", big)
	mkdirs(t, j(l0, "p2"))
	put(l0, "dC/x", []byte("x"))
	put(l0, "dC/y", []byte("y"))
	put(l0, "dD/old", []byte("old"))
	put(l1, "dE/a/b/meta", []byte("deep metacopy\n"))
	put(l1, "moveme", []byte("moveme data\n"))
	put(l0, "dF/f", []byte("dF f\n"))
	put(l0, "g1", []byte("g1 data\n"))
	put(l1, "g2", []byte("g2 data\n"))
	lowers := []string{l1, l0}
	kopts := []string{"redirect_dir=on", "metacopy=on"}

	k := mountKernel(t, lowers, upper, work, kopts...)
	do := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("through the kernel overlay: %s: %v", what, err)
		}
	}
	do("rename dA dA2 (same parent)", os.Rename(j(k, "dA"), j(k, "dA2")))
	do("rename p1/dB p2/dB (across parents)", os.Rename(j(k, "p1/dB"), j(k, "p2/dB")))
	do("chmod f1", os.Chmod(j(k, "f1"), 0o600))
	do("chown f2", os.Chown(j(k, "f2"), 1000, 1000))
	do("chmod f3", os.Chmod(j(k, "f3"), 0o640))
	do("mkdir sub", os.Mkdir(j(k, "sub"), 0o755))
	do("rename metacopy f3", os.Rename(j(k, "f3"), j(k, "sub/f3moved")))
	do("chmod moveme", os.Chmod(j(k, "moveme"), 0o600))
	do("rename metacopy moveme same dir", os.Rename(j(k, "moveme"), j(k, "moved")))
	do("chmod deep file", os.Chmod(j(k, "dE/a/b/meta"), 0o444))
	do("chmod in renamed dir", os.Chmod(j(k, "p2/dB/big"), 0o600))
	do("rm f4", os.Remove(j(k, "f4")))
	do("rm -r dC", os.RemoveAll(j(k, "dC")))
	do("rm -r dD", os.RemoveAll(j(k, "dD")))
	do("mkdir dD", os.Mkdir(j(k, "dD"), 0o755))
	do("create dD/new", os.WriteFile(j(k, "dD/new"), []byte("new in opaque"), 0o644))
	do("create newfile", os.WriteFile(j(k, "newfile"), []byte("new file\n"), 0o644))
	do("create in renamed dir", os.WriteFile(j(k, "dA2/added"), []byte("added\n"), 0o644))
	do("rm in renamed dir", os.Remove(j(k, "p2/dB/inner")))
	do("rename a dir inside a renamed dir", os.Rename(j(k, "dA2/sub"), j(k, "dA2/sub2")))
	do("rename a renamed dir again", os.Rename(j(k, "dF"), j(k, "dF1")))
	do("rename it once more, across parents", os.Rename(j(k, "dF1"), j(k, "p2/dF2")))
	do("rename a file over a lower file", os.Rename(j(k, "g1"), j(k, "g2")))
	if err := unix.Unmount(k, 0); err != nil {
		t.Fatalf("umount kernel overlay: %v", err)
	}

	dump := overlayXattrs(t, upper)
	for _, want := range []string{
		"trusted.overlay.redirect=\"dA\"",
		"trusted.overlay.redirect=\"/p1/dB\"",
		"trusted.overlay.metacopy",
		"trusted.overlay.opaque=\"y\"",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("the kernel did not write %s in the upper; getfattr says:\n%s", want, dump)
		}
	}
	t.Logf("upper written by the kernel:\n%s", dump)

	hidden := []string{"f4", "dC", "dD/old", "dA", "p1/dB", "f3", "moveme", "p2/dB/inner", "dA2/sub", "dF", "dF1", "g1"}
	compareWithUpper(t, "kernel-written upper (redirect_dir=on,metacopy=on)", lowers, upper, work, hidden, kopts...)

	// The same upper as the top lower layer: redirects and metacopy in a lower.
	t.Run("as lower", func(t *testing.T) {
		stack := []string{upper, l1, l0}
		k := mountKernel(t, stack, "", "", "redirect_dir=follow", "metacopy=on")
		o := mountOvlfs(t, stack, "", "")
		want := snapshot(t, k)
		checkHidden(t, k, hidden...)
		requireSameTree(t, "kernel-written upper used as a lower layer", snapshot(t, o), want)
		checkHidden(t, o, hidden...)
	})

	// Metacopy files must read as the real data, not zeros.
	o := mountOvlfs(t, lowers, upper, work)
	for p, src := range map[string]string{"f1": "f1", "f2": "f2", "sub/f3moved": "f3", "moved": "moveme",
		"dE/a/b/meta": "dE/a/b/meta", "p2/dB/big": "p1/dB/big", "dA2/inner": "dA/inner", "dA2/sub2/deeper": "dA/sub/deeper",
		"p2/dF2/f": "dF/f", "g2": "g1"} {
		b, err := os.ReadFile(j(o, p))
		if err != nil {
			t.Errorf("read %s through ovlfs: %v", p, err)
			continue
		}
		if !bytes.Equal(b, data[src]) {
			t.Errorf("%s through ovlfs: %d bytes sha %x, want the data of lower %s (%d bytes sha %x)",
				p, len(b), sha256.Sum256(b), src, len(data[src]), sha256.Sum256(data[src]))
		}
	}
}

func TestRedirectEscapeRefused(t *testing.T) {
	requireMount(t)
	for _, redirect := range []string{"../x", "/../../etc", "a/b", "..", "/../x", "/a/../../x", "./x"} {
		t.Run(strings.ReplaceAll(redirect, "/", "_"), func(t *testing.T) {
			// T/etc/secret, T/layers/x/secret: where a naive join of the
			// redirect with a layer path would land.
			T := t.TempDir()
			layers := filepath.Join(T, "layers")
			bottom, upper, work := filepath.Join(layers, "bottom"), filepath.Join(layers, "upper"), filepath.Join(T, "work")
			const secret = "SENTINEL-OUTSIDE-THE-LAYERS"
			for _, p := range []string{filepath.Join(T, "etc"), filepath.Join(layers, "x"), filepath.Join(T, "x")} {
				writeFile(t, filepath.Join(p, "secret"), []byte(secret), 0o644)
			}
			writeFile(t, filepath.Join(bottom, "d", "ok"), []byte("bottom d ok"), 0o644)
			writeFile(t, filepath.Join(bottom, "a", "b", "inner"), []byte("inside the layer"), 0o644)
			writeFile(t, filepath.Join(bottom, "plain"), []byte("plain"), 0o644)
			mkdirs(t, work)
			mkdirMode(t, filepath.Join(upper, "d"), 0o755)
			setXattr(t, filepath.Join(upper, "d"), "trusted.overlay.redirect", []byte(redirect))

			k := mountKernel(t, []string{bottom}, upper, work)
			var kst unix.Stat_t
			kerr := unix.Lstat(filepath.Join(k, "d"), &kst)
			kn, _ := readdirNames(filepath.Join(k, "d"))
			t.Logf("kernel: lstat d: %v; names %q", kerr, kn)
			if err := unix.Unmount(k, 0); err != nil {
				t.Fatal(err)
			}

			o := mountOvlfs(t, []string{bottom}, upper, work)
			var st unix.Stat_t
			err := unix.Lstat(filepath.Join(o, "d"), &st)
			names, _ := readdirNames(filepath.Join(o, "d"))
			if err == nil {
				t.Errorf("redirect %q: lookup of d through ovlfs succeeded (%s, names %q); want an error (kernel: %v)", redirect, fileType(st.Mode), names, kerr)
			} else if !errors.Is(err, unix.EIO) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINVAL) {
				t.Errorf("redirect %q: lookup of d: %v, want EIO, EPERM, ENOENT (kernel: %v)", redirect, err, kerr)
			}
			snap := snapshot(t, o)
			for p, e := range snap {
				if strings.Contains(p, "secret") {
					t.Errorf("redirect %q: a sentinel name shows through ovlfs: %s", redirect, p)
				}
				if e.Type == "file" {
					b, _ := os.ReadFile(filepath.Join(o, p))
					if bytes.Contains(b, []byte(secret)) {
						t.Errorf("redirect %q: sentinel content shows through ovlfs at %s", redirect, p)
					}
				}
			}
			if _, ok := snap["plain"]; !ok {
				t.Errorf("redirect %q: the rest of the tree is gone: %v", redirect, snap["."].Names)
			}
		})
	}
}

// expectEntry is one path of an expected tree: type and, for files, content.
type expectEntry struct {
	typ     string
	content string
}

func TestWhFormat(t *testing.T) {
	requireMount(t)
	dir := t.TempDir()
	j := filepath.Join
	l0, l1 := j(dir, "l0"), j(dir, "l1")
	for _, p := range []string{"a", "b", "d/x", "d/y", "e/p", "f/q", "g/r", "h/s", "i/t"} {
		writeFile(t, j(l0, p), []byte("l0 "+p), 0o644)
	}
	writeFile(t, j(l1, ".wh.a"), nil, 0o644)
	writeFile(t, j(l1, "c"), []byte("l1 c"), 0o644) // hidden by .wh.c in its own layer
	writeFile(t, j(l1, ".wh.c"), nil, 0o644)
	writeFile(t, j(l1, "d/.wh.x"), nil, 0o644)
	writeFile(t, j(l1, "e/.wh..wh..opq"), nil, 0o644)
	writeFile(t, j(l1, "e/new"), []byte("l1 e/new"), 0o644)
	mkdirMode(t, j(l1, "f"), 0o755)
	setXattr(t, j(l1, "f"), "user.overlay.opaque", []byte("y"))
	writeFile(t, j(l1, "f/n2"), []byte("l1 f/n2"), 0o644)
	mkdirMode(t, j(l1, "g"), 0o755)
	setXattr(t, j(l1, "g"), "user.fuseoverlayfs.opaque", []byte("y"))
	writeFile(t, j(l1, "g/n3"), []byte("l1 g/n3"), 0o644)
	writeFile(t, j(l1, ".wh.zz"), nil, 0o644) // hides nothing
	writeFile(t, j(l1, "h/.wh.nothing"), nil, 0o644)
	writeFile(t, j(l1, ".wh.i"), nil, 0o644) // a whole dir
	writeFile(t, j(l1, "top"), []byte("l1 top"), 0o644)

	want := map[string]expectEntry{
		".":     {typ: "dir"},
		"b":     {"file", "l0 b"},
		"d":     {typ: "dir"},
		"d/y":   {"file", "l0 d/y"},
		"e":     {typ: "dir"},
		"e/new": {"file", "l1 e/new"},
		"f":     {typ: "dir"},
		"f/n2":  {"file", "l1 f/n2"},
		"g":     {typ: "dir"},
		"g/n3":  {"file", "l1 g/n3"},
		"h":     {typ: "dir"},
		"h/s":   {"file", "l0 h/s"},
		"top":   {"file", "l1 top"},
	}
	o := mountOvlfs(t, []string{l1, l0}, "", "")
	got := snapshot(t, o)
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%q missing", p))
			continue
		}
		if g.Type != w.typ {
			diffs = append(diffs, fmt.Sprintf("%q is a %s, want %s", p, g.Type, w.typ))
		}
		if w.typ == "file" {
			if b, err := os.ReadFile(j(o, p)); err != nil || string(b) != w.content {
				diffs = append(diffs, fmt.Sprintf("%q reads %q (%v), want %q", p, b, err, w.content))
			}
		}
		for _, x := range g.Xattrs {
			if strings.HasPrefix(x, "user.overlay.") || strings.HasPrefix(x, "user.fuseoverlayfs.") {
				diffs = append(diffs, fmt.Sprintf("%q shows the marker xattr %s", p, x))
			}
		}
		if g.Err != "" {
			diffs = append(diffs, fmt.Sprintf("%q: %s", p, g.Err))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%q shown, not expected: %s", p, got[p].short()))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf(".wh. layers (l1 over l0 in %s), %d differences from the expected tree:\n  %s", dir, len(diffs), strings.Join(diffs, "\n  "))
	}
	checkHidden(t, o, "a", "c", "d/x", "e/p", "f/q", "g/r", "i", ".wh.a", ".wh.c", "d/.wh.x",
		"e/.wh..wh..opq", ".wh.zz", "h/.wh.nothing", ".wh.i")
}

func TestXattrsHidden(t *testing.T) {
	requireMount(t)
	dir := t.TempDir()
	j := filepath.Join
	l0, l1 := j(dir, "l0"), j(dir, "l1")
	writeFile(t, j(l0, "odir/below"), []byte("below"), 0o644)
	writeFile(t, j(l0, "idir/below"), []byte("below"), 0o644)
	writeFile(t, j(l1, "f"), []byte("f"), 0o644)
	setXattr(t, j(l1, "f"), "trusted.overlay.origin", nil)
	setXattr(t, j(l1, "f"), "trusted.overlay.nlink", []byte("U+1"))
	setXattr(t, j(l1, "f"), "user.plain", []byte("1"))
	setXattr(t, j(l1, "f"), "trusted.plain", []byte("t"))
	mkdirMode(t, j(l1, "odir"), 0o755)
	setOpaque(t, j(l1, "odir"))
	setXattr(t, j(l1, "odir"), "trusted.overlay.origin", []byte{0, 0xfb, 5, 0, 1})
	mkdirMode(t, j(l1, "idir"), 0o755)
	setXattr(t, j(l1, "idir"), "trusted.overlay.impure", []byte("y"))
	writeFile(t, j(l1, "esc"), []byte("esc"), 0o644)
	setXattr(t, j(l1, "esc"), "trusted.overlay.overlay.foo", []byte("bar"))
	writeFile(t, j(l1, "fo"), []byte("fo"), 0o644)
	setXattr(t, j(l1, "fo"), "user.fuseoverlayfs.foo", []byte("hidden"))
	setXattr(t, j(l1, "fo"), "user.visible", []byte("yes"))
	lowers := []string{l1, l0}
	paths := []string{".", "f", "odir", "idir", "esc", "fo", "idir/below"}
	views := map[string]xattrView{}
	t.Run("lowers", func(t *testing.T) {
		k, o := mountKernel(t, lowers, "", ""), mountOvlfs(t, lowers, "", "")
		compareXattrViews(t, captureXattrs(t, k, paths), captureXattrs(t, o, paths))
	})
	t.Run("upper", func(t *testing.T) {
		work := j(dir, "work")
		mkdirs(t, work)
		// One mount at a time on one upper.
		o := mountOvlfs(t, lowers[1:], lowers[0], work)
		views["ovlfs"] = captureXattrs(t, o, paths)
		unmountFuse(t, o)
		k := mountKernel(t, lowers[1:], lowers[0], work)
		views["kernel"] = captureXattrs(t, k, paths)
		if err := unix.Unmount(k, 0); err != nil {
			t.Fatal(err)
		}
		compareXattrViews(t, views["kernel"], views["ovlfs"])
	})
}

// privateXattrs are overlay metadata keys that clients must never get.
var privateXattrs = []string{"trusted.overlay.opaque", "trusted.overlay.origin", "trusted.overlay.impure",
	"trusted.overlay.nlink", "trusted.overlay.overlay.foo", "user.fuseoverlayfs.foo"}

// xattrView is what a mount shows of the xattrs of some paths: the full
// listing ("path" -> sorted name=value) and getxattr probes ("path name").
type xattrView map[string]string

func captureXattrs(t *testing.T, mnt string, paths []string) xattrView {
	t.Helper()
	v := xattrView{}
	for _, p := range paths {
		l, err := listXattrs(filepath.Join(mnt, p), func(string) bool { return true })
		if err != nil {
			l = append(l, "error: "+errName(err))
		}
		v[p] = strings.Join(l, "\n")
		for _, name := range append(privateXattrs, "trusted.overlay.foo") {
			b, err := getXattr(filepath.Join(mnt, p), name)
			if err != nil {
				v[p+" "+name] = errName(err)
			} else {
				v[p+" "+name] = fmt.Sprintf("%q", b)
			}
		}
	}
	return v
}

// compareXattrViews checks that ovlfs shows the kernel's xattrs, except that
// it must hide user.fuseoverlayfs.* (which the kernel shows), and that no
// private key can be read through ovlfs.
func compareXattrViews(t *testing.T, kernel, ovlfs xattrView) {
	t.Helper()
	keys := make([]string, 0, len(kernel))
	for k := range kernel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want := kernel[k]
		if strings.HasSuffix(k, " user.fuseoverlayfs.foo") && !strings.HasPrefix(want, "E") {
			want = "ENODATA"
		}
		if !strings.Contains(k, " ") {
			var keep []string
			for _, l := range strings.Split(want, "\n") {
				if !strings.HasPrefix(l, "user.fuseoverlayfs.") {
					keep = append(keep, l)
				}
			}
			want = strings.Join(keep, "\n")
		}
		if ovlfs[k] != want {
			t.Errorf("%s: ovlfs shows %s, kernel %s (want %s)", k, ovlfs[k], kernel[k], want)
		}
	}
	for k, v := range ovlfs {
		for _, p := range privateXattrs {
			if strings.HasSuffix(k, " "+p) && !strings.HasPrefix(v, "E") {
				t.Errorf("%s: private xattr readable through ovlfs: %s", k, v)
			}
		}
		if !strings.Contains(k, " ") {
			for _, p := range []string{"trusted.overlay.opaque", "trusted.overlay.origin", "trusted.overlay.impure", "trusted.overlay.nlink", "user.fuseoverlayfs."} {
				if strings.Contains("\n"+v, "\n"+p) {
					t.Errorf("%s: ovlfs lists private xattr %s: %s", k, p, v)
				}
			}
		}
	}
	t.Logf("esc trusted.overlay.foo: kernel %s, ovlfs %s", kernel["esc trusted.overlay.foo"], ovlfs["esc trusted.overlay.foo"])
}

// dirent is one linux_dirent64 record.
type dirent struct {
	off  int64
	typ  uint8
	name string
}

func parseDirents(buf []byte) []dirent {
	var out []dirent
	for len(buf) >= 19 {
		reclen := int(binary.NativeEndian.Uint16(buf[16:18]))
		if reclen < 19 || reclen > len(buf) {
			break
		}
		name := buf[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, dirent{off: int64(binary.NativeEndian.Uint64(buf[8:16])), typ: buf[18], name: string(name)})
		buf = buf[reclen:]
	}
	return out
}

// dirMark is the directory position (telldir) after a getdents batch, and how
// many entries had been read by then.
type dirMark struct {
	pos int64
	n   int
}

// readDirents reads the whole dir at fd in bufSize batches, from offset 0.
func readDirents(t *testing.T, fd int, bufSize int) ([]dirent, []dirMark) {
	t.Helper()
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		t.Fatalf("rewinddir: %v", err)
	}
	buf := make([]byte, bufSize)
	var ents []dirent
	var marks []dirMark
	for i := 0; ; i++ {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents after %d entries: %v", len(ents), err)
		}
		if n == 0 {
			break
		}
		ents = append(ents, parseDirents(buf[:n])...)
		pos, err := unix.Seek(fd, 0, io.SeekCurrent)
		if err != nil {
			t.Fatalf("telldir: %v", err)
		}
		marks = append(marks, dirMark{pos, len(ents)})
		if i > 100000 {
			t.Fatal("getdents never ends")
		}
	}
	return ents, marks
}

// checkDirSeek reads dir in small batches and checks that seeking back to any
// remembered position (and to any entry's d_off) continues with the same entries.
func checkDirSeek(t *testing.T, who, dir string) []string {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ents, marks := readDirents(t, fd, 512)
	if len(ents) < 2 || ents[0].name != "." || ents[1].name != ".." {
		first := ents
		if len(first) > 3 {
			first = first[:3]
		}
		t.Errorf("%s: readdir does not start with \".\", \"..\": %v", who, first)
	}
	seen := map[string]bool{}
	var names []string
	for _, e := range ents {
		if seen[e.name] {
			t.Errorf("%s: readdir lists %q twice", who, e.name)
		}
		seen[e.name] = true
		if e.name != "." && e.name != ".." {
			names = append(names, e.name)
		}
	}
	buf := make([]byte, 512)
	fails := 0
	check := func(how string, pos int64, want int) {
		if fails > 10 {
			return
		}
		if _, err := unix.Seek(fd, pos, io.SeekStart); err != nil {
			t.Errorf("%s: seekdir(%d) (%s): %v", who, pos, how, err)
			fails++
			return
		}
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Errorf("%s: getdents after seekdir(%d) (%s): %v", who, pos, how, err)
			fails++
			return
		}
		got := parseDirents(buf[:n])
		if want >= len(ents) {
			if len(got) != 0 {
				t.Errorf("%s: after seekdir(%d) to the end (%s), getdents gives %d more entries, first %q", who, pos, how, len(got), got[0].name)
				fails++
			}
			return
		}
		if len(got) == 0 {
			t.Errorf("%s: after seekdir(%d) (%s), getdents gives nothing; want %q (entry %d of %d)", who, pos, how, ents[want].name, want, len(ents))
			fails++
			return
		}
		for i, g := range got {
			if want+i >= len(ents) || g.name != ents[want+i].name {
				w := "(end)"
				if want+i < len(ents) {
					w = ents[want+i].name
				}
				t.Errorf("%s: after seekdir(%d) (%s), entry %d is %q, want %q (entry %d)", who, pos, how, i, g.name, w, want+i)
				fails++
				return
			}
		}
	}
	for i := len(marks) - 1; i >= 0; i -= 7 { // backwards: real seeks, not just rewinds
		check(fmt.Sprintf("telldir after batch %d", i), marks[i].pos, marks[i].n)
	}
	check("telldir at the start", 0, 0)
	for i := 0; i < len(ents); i += 97 {
		check(fmt.Sprintf("d_off of entry %d %q", i, ents[i].name), ents[i].off, i+1)
	}
	sort.Strings(names)
	return names
}

func TestReaddirSeek(t *testing.T) {
	requireMount(t)
	dir := t.TempDir()
	l0, l1, l2 := filepath.Join(dir, "l0"), filepath.Join(dir, "l1"), filepath.Join(dir, "l2")
	name := func(i int) string { return fmt.Sprintf("entry-%04d-with-a-longer-name", i) }
	var hidden []string
	for i := 0; i < 1200; i++ {
		writeFile(t, filepath.Join(l0, "big", name(i)), nil, 0o644)
	}
	for i := 800; i < 2000; i++ {
		writeFile(t, filepath.Join(l1, "big", name(i)), []byte("l1"), 0o644)
	}
	for i := 0; i < 100; i++ {
		mkWhiteout(t, filepath.Join(l1, "big", name(i)))
		hidden = append(hidden, filepath.Join("big", name(i)))
	}
	for i := 1800; i < 3000; i++ {
		if i%10 == 0 {
			mkdirMode(t, filepath.Join(l2, "big", name(i)), 0o755)
		} else {
			writeFile(t, filepath.Join(l2, "big", name(i)), []byte("l2"), 0o644)
		}
	}
	lowers := []string{l2, l1, l0}
	k := mountKernel(t, lowers, "", "")
	o := mountOvlfs(t, lowers, "", "")
	kn := checkDirSeek(t, "kernel", filepath.Join(k, "big"))
	on := checkDirSeek(t, filepath.Base(ovlfsBin), filepath.Join(o, "big"))
	if len(kn) != 2900 {
		t.Errorf("kernel lists %d names in big, the test expects 2900", len(kn))
	}
	if extra, miss := setDiff(on, kn); len(extra)+len(miss) > 0 {
		t.Errorf("readdir of the merged dir: ovlfs lists %d names, kernel %d; extra %q, lacks %q", len(on), len(kn), shortList(extra), shortList(miss))
	}
	checkHidden(t, o, hidden[:5]...)
}

// treeState records what must not change on disk: per path its type, mode,
// owner, size, mtime, ctime, content hash and xattrs.
func treeState(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		s := fmt.Sprintf("%s %o %d:%d size %d mtime %d.%09d ctime %d.%09d", fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid,
			st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		if d.Type().IsRegular() {
			h, err := hashFile(p)
			if err != nil {
				return err
			}
			s += " sha " + h
		}
		x, _ := listXattrs(p, func(string) bool { return true })
		out[p] = s + fmt.Sprintf(" xattrs %q", x)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSymlinkNoEscape(t *testing.T) {
	requireMount(t)
	T := t.TempDir()
	j := filepath.Join
	l0, l1, sentinel := j(T, "layers", "l0"), j(T, "layers", "l1"), j(T, "sentinel")
	writeFile(t, j(sentinel, "file"), []byte("SENTINEL"), 0o644)
	writeFile(t, j(sentinel, "sub", "file2"), []byte("SENTINEL2"), 0o600)
	links := map[string]string{
		"esc":              "/etc",
		"esc2":             "../../..",
		"dir/esc3":         "../../../sentinel/file",
		"dir/esc4":         "../../../../../../../../etc/passwd",
		"dir/sub/esc5":     "../../../../sentinel/sub",
		"abs":              "/nonexistent/target",
		"dot":              ".",
		"empty-components": "a//b/../c",
	}
	for p, target := range links {
		symlink(t, target, j(l0, p))
	}
	writeFile(t, j(l0, "d", "inner"), []byte("inner"), 0o644)
	symlink(t, "/etc", j(l1, "d")) // a symlink over a lower dir
	links["d"] = "/etc"
	symlink(t, "../sentinel", j(l1, "esc2")) // over a lower symlink
	links["esc2"] = "../sentinel"
	writeFile(t, j(l1, "dir", "plain"), []byte("plain"), 0o644)

	before := treeState(t, T)
	lowers := []string{l1, l0}
	k := mountKernel(t, lowers, "", "")
	o := mountOvlfs(t, lowers, "", "")
	for p, target := range links {
		var st unix.Stat_t
		if err := unix.Lstat(j(o, p), &st); err != nil {
			t.Errorf("lstat %s through ovlfs: %v", p, err)
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("%s through ovlfs is a %s, want a symlink", p, fileType(st.Mode))
		}
		got, err := os.Readlink(j(o, p))
		if err != nil || got != target {
			t.Errorf("readlink %s through ovlfs: %q (%v), want %q", p, got, err, target)
		}
		if st.Size != int64(len(target)) {
			t.Errorf("lstat %s through ovlfs: size %d, want %d (the target's length)", p, st.Size, len(target))
		}
	}
	requireSameTree(t, "symlinks", snapshot(t, o), snapshot(t, k))
	checkHidden(t, o, "d/inner")
	unmountFuse(t, o)
	if err := unix.Unmount(k, 0); err != nil {
		t.Fatal(err)
	}
	after := treeState(t, T)
	for p, s := range before {
		if strings.Contains(p, "/mnt") {
			continue
		}
		if after[p] != s {
			t.Errorf("%s changed while mounted:\n  before %s\n  after  %s", p, s, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok && !strings.HasSuffix(p, "/mnt") && !strings.Contains(p, "/mnt/") {
			t.Errorf("%s appeared while mounted", p)
		}
	}
}

func TestStatfsAccess(t *testing.T) {
	requireMount(t)
	dir := t.TempDir()
	j := filepath.Join
	l0, l1, work := j(dir, "l0"), j(dir, "l1"), j(dir, "work")
	mkdirs(t, work)
	files := map[string]uint32{"rw": 0o644, "private": 0o600, "exec": 0o755, "none": 0, "suid": 0o4755,
		"xonly": 0o111, "ronly": 0o444, "gx": 0o610}
	for n, m := range files {
		writeFile(t, j(l0, n), []byte(n), 0o644)
		chown(t, j(l0, n), 1000, 1000)
		chmod(t, j(l0, n), m)
	}
	mkdirMode(t, j(l0, "dir700"), 0o700)
	mkdirMode(t, j(l1, "dir000"), 0)
	mkFifo(t, j(l1, "fifo"), 0o600)
	writeFile(t, j(l1, "upperfile"), []byte("u"), 0o640)
	paths := []string{".", "rw", "private", "exec", "none", "suid", "xonly", "ronly", "gx", "dir700", "dir000", "fifo", "upperfile"}
	access := func(mnt string) map[string]string {
		out := map[string]string{}
		for _, p := range paths {
			for _, m := range []struct {
				name string
				mode uint32
			}{{"R_OK", unix.R_OK}, {"W_OK", unix.W_OK}, {"X_OK", unix.X_OK}, {"F_OK", unix.F_OK}} {
				res := "ok"
				if err := unix.Access(j(mnt, p), m.mode); err != nil {
					res = errName(err)
				}
				out[p+" "+m.name] = res
			}
		}
		return out
	}
	compare := func(t *testing.T, got, want map[string]string) {
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if got[k] != want[k] {
				t.Errorf("access(%s): ovlfs %s, kernel %s", k, got[k], want[k])
			}
		}
	}
	statfs := func(t *testing.T, mnt string) {
		var st unix.Statfs_t
		if err := unix.Statfs(mnt, &st); err != nil {
			t.Errorf("statfs %s: %v", mnt, err)
			return
		}
		if st.Blocks == 0 || st.Bsize == 0 || st.Namelen == 0 {
			t.Errorf("statfs %s: blocks %d bsize %d namelen %d, want non-zero", mnt, st.Blocks, st.Bsize, st.Namelen)
		}
	}
	t.Run("lowers", func(t *testing.T) {
		lowers := []string{l1, l0}
		k := mountKernel(t, lowers, "", "")
		o := mountOvlfs(t, lowers, "", "")
		statfs(t, o)
		compare(t, access(o), access(k))
	})
	t.Run("upper", func(t *testing.T) {
		o := mountOvlfs(t, []string{l0}, l1, work)
		statfs(t, o)
		got := access(o)
		unmountFuse(t, o)
		k := mountKernel(t, []string{l0}, l1, work)
		want := access(k)
		if err := unix.Unmount(k, 0); err != nil {
			t.Fatal(err)
		}
		compare(t, got, want)
	})
}
