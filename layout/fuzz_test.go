package layout

// FuzzApplyDiff: tar layers built from a fuzzed description are applied into a
// child layer of a store. Whatever the tarball, ApplyDiff never writes outside
// the layer: a sentinel dir next to the store (where every absolute link
// target of the description points) and the parent layer stay unchanged; a
// refused tarball leaves the layer empty; an applied one holds no ".wh." names,
// no symlink that climbs out, and no hard link to a file outside it.

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fzTar builds a tarball from lines "T NAME[\tTARGET]": T is f (file), d
// (dir), l (symlink), h (hard link), p (fifo), w (whiteout of NAME), o
// (opaque marker in dir NAME), x (file with a PAX xattr). Link targets that
// start with "/" are moved below outside.
func fzTar(spec, outside string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i, line := range strings.Split(spec, "\n") {
		if len(line) < 2 {
			continue
		}
		name, target, _ := strings.Cut(line[2:], "\t")
		if strings.HasPrefix(target, "/") {
			target = outside + target
		}
		h := &tar.Header{Name: name, Mode: 0o644, ModTime: time.Unix(int64(1e9+i), 0), Format: tar.FormatPAX}
		var body []byte
		switch line[0] {
		case 'f':
			h.Typeflag, body = tar.TypeReg, []byte(name)
		case 'x':
			h.Typeflag, body = tar.TypeReg, []byte(name)
			h.PAXRecords = map[string]string{"SCHILY.xattr." + target: "v"}
		case 'd':
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case 'l':
			h.Typeflag, h.Linkname = tar.TypeSymlink, target
		case 'h':
			h.Typeflag, h.Linkname = tar.TypeLink, target
		case 'p':
			h.Typeflag = tar.TypeFifo
		case 'w':
			h.Typeflag, h.Name = tar.TypeReg, path.Join(path.Dir(name), ".wh."+path.Base(name))
		case 'o':
			h.Typeflag, h.Name = tar.TypeReg, path.Join(name, ".wh..wh..opq")
		default:
			continue
		}
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if tw.WriteHeader(h) != nil {
			continue
		}
		if h.Size > 0 {
			tw.Write(body)
		}
	}
	tw.Close()
	return b.Bytes()
}

// fzState is a raw view of a tree: type, mode, size, content, ctime, link target.
func fzState(root string) map[string]string {
	out := map[string]string{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(root, p)
		if err != nil {
			out[rel] = "!" + err.Error()
			return nil
		}
		var st unix.Stat_t
		unix.Lstat(p, &st)
		s := fmt.Sprintf("%o %d c%d.%d n%d", st.Mode, st.Size, st.Ctim.Sec, st.Ctim.Nsec, st.Nlink)
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			s += " " + string(b)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			tg, _ := os.Readlink(p)
			s += " -> " + tg
		}
		out[rel] = s
		return nil
	})
	return out
}

func fzDiff(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, fmt.Sprintf("%q: %q vs %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%q: new %q", k, v))
		}
	}
	sort.Strings(d)
	return d
}

func FuzzApplyDiff(f *testing.F) {
	for _, s := range []string{
		"d a\nf a/b\nl a/c\tb\nh a/d\ta/b",
		"l esc\t/\nf esc/x",
		"l up\t..\nf up/x",
		"l a\tb/../..\nd a/x",
		"d d\nl d/s\t../..\nf d/s/x",
		"f ../x",
		"f /abs",
		"h x\t/etc/passwd",
		"h x\t../outside",
		"d a\nw a/b\no a\nf a/c",
		"w .wh.x\nw ..\nw .",
		"l a\t.\nf a/a/a/x",
		"l a\t/\nh b\ta/s",
		"f x\nl x\t/\nf x/y",
		"x f\tuser.a\nx g\ttrusted.overlay.opaque",
		"p fifo\nd fifo\nf fifo/x",
		"d a\nl a/b\t/x\nd a/b\nf a/b/c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		dir := t.TempDir()
		outside := filepath.Join(dir, "outside")
		if err := os.MkdirAll(filepath.Join(outside, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(outside, "s"), []byte("sentinel"), 0o644)
		s, err := Open(filepath.Join(dir, "root"))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Create("base", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyDiff("base", bytes.NewReader(fzTar("d a\nf a/b\nf x", outside))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Create("c", "base"); err != nil {
			t.Fatal(err)
		}
		outBefore := fzState(outside)
		baseBefore := fzState(filepath.Join(s.Root, "base"))
		_, aerr := s.ApplyDiff("c", bytes.NewReader(fzTar(spec, outside)))
		if d := fzDiff(outBefore, fzState(outside)); len(d) > 0 {
			t.Fatalf("ApplyDiff (%v) changed the dir outside the store: %s", aerr, strings.Join(d, "; "))
		}
		if d := fzDiff(baseBefore, fzState(filepath.Join(s.Root, "base"))); len(d) > 0 {
			t.Fatalf("ApplyDiff (%v) changed the parent layer: %s", aerr, strings.Join(d, "; "))
		}
		diff := filepath.Join(s.Root, "c", "diff")
		names, _ := os.ReadDir(diff)
		if aerr != nil {
			if len(names) > 0 {
				t.Fatalf("refused (%v) but the layer holds %d entries", aerr, len(names))
			}
			return
		}
		inodes := map[uint64]int{}
		nlink := map[uint64]uint64{}
		filepath.Walk(diff, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			rel, _ := filepath.Rel(diff, p)
			if strings.HasPrefix(fi.Name(), ".wh.") {
				t.Errorf("%q: a .wh. name in the applied layer", rel)
			}
			var st unix.Stat_t
			unix.Lstat(p, &st)
			if fi.Mode()&os.ModeSymlink != 0 {
				tg, _ := os.Readlink(p)
				if !strings.HasPrefix(tg, "/") {
					if c := path.Clean(path.Join(path.Dir(rel), tg)); c == ".." || strings.HasPrefix(c, "../") {
						t.Errorf("%q -> %q climbs out of the layer", rel, tg)
					}
				}
			}
			if fi.Mode().IsRegular() {
				inodes[st.Ino]++
				nlink[st.Ino] = uint64(st.Nlink)
			}
			return nil
		})
		for ino, n := range inodes {
			if uint64(n) != nlink[ino] {
				t.Errorf("inode %d has %d links, %d in the layer: a hard link out of the layer", ino, nlink[ino], n)
			}
		}
	})
}
