package layout

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/ovlfs/ovlfs/cow"
	"github.com/ovlfs/ovlfs/whiteout"
)

// tarEntry is one entry of a test tarball.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	uid, gid   int
	body       string
	xattrs     map[string]string
	major      int64
}

var t0 = time.Date(2023, 4, 5, 6, 7, 8, 123456789, time.UTC)

func mkTar(t testing.TB, ents ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: t0.Add(time.Duration(i) * time.Second), Format: tar.FormatPAX, Devmajor: e.major}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 && !strings.Contains(e.name, ".wh.") {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return b.Bytes()
}

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func mustCreate(t testing.TB, s *Store, id, parent string) {
	t.Helper()
	if _, err := s.Create(id, parent); err != nil {
		t.Fatal(err)
	}
}

func mustApply(t testing.TB, s *Store, id string, data []byte) {
	t.Helper()
	if _, err := s.ApplyDiff(id, bytes.NewReader(data)); err != nil {
		t.Fatalf("apply %s: %v", id, err)
	}
}

// tree describes every entry below dir: type, mode, owner, size, content,
// link target, rdev, mtime, xattrs, and which names share an inode.
func tree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	inodes := map[uint64]string{}
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		d := []string{fileType(st.Mode), "mode=" + octal(st.Mode&0o7777), "owner=" + itoa(int(st.Uid)) + ":" + itoa(int(st.Gid))}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, _ := os.ReadFile(p)
			d = append(d, "data="+string(b))
			if first, ok := inodes[st.Ino]; ok {
				d = append(d, "link-of="+first)
			} else {
				inodes[st.Ino] = rel
			}
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			d = append(d, "target="+l)
		case unix.S_IFCHR, unix.S_IFBLK:
			d = append(d, "rdev="+itoa(int(unix.Major(st.Rdev)))+":"+itoa(int(unix.Minor(st.Rdev))))
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || rel != "." {
			d = append(d, "mtime="+time.Unix(st.Mtim.Unix()).UTC().Format(time.RFC3339Nano))
		}
		names, _ := cow.Llistxattr(p)
		var keys []string
		for _, k := range names {
			v, _ := cow.Lgetxattr(p, k)
			keys = append(keys, k+"="+string(v))
		}
		sort.Strings(keys)
		d = append(d, keys...)
		out[rel] = strings.Join(d, " ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fileType(m uint32) string {
	return map[uint32]string{unix.S_IFDIR: "dir", unix.S_IFREG: "file", unix.S_IFLNK: "symlink",
		unix.S_IFCHR: "chr", unix.S_IFBLK: "blk", unix.S_IFIFO: "fifo", unix.S_IFSOCK: "sock"}[m&unix.S_IFMT]
}

func octal(m uint32) string { return "0" + strings.TrimLeft(itoa8(m), "0") }

func itoa8(m uint32) string {
	var b []byte
	for m > 0 {
		b = append([]byte{byte('0' + m%8)}, b...)
		m /= 8
	}
	return "0" + string(b)
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	if neg {
		return "-" + string(b)
	}
	return string(b)
}

func diffTrees(t testing.TB, what string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: %s missing (want %s)", what, k, w)
		} else if g != w {
			t.Errorf("%s: %s:\n got  %s\n want %s", what, k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %s: %s", what, k, g)
		}
	}
}

func TestCleanName(t *testing.T) {
	ok := map[string]string{"a/b": "a/b", "./a/": "a", "a//b/./c": "a/b/c", "./": "", "a/.wh.x": "a/.wh.x"}
	for in, want := range ok {
		p, err := cleanName(in)
		if err != nil || strings.Join(p, "/") != want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", in, p, err, want)
		}
	}
	for _, bad := range []string{"/etc/passwd", "../x", "a/../../x", "a/..", ".wh.d/x", "a/.wh..wh..opq/b"} {
		if _, err := cleanName(bad); !errors.Is(err, ErrRefused) {
			t.Errorf("cleanName(%q): %v, want refused", bad, err)
		}
	}
}

func TestSymlinkEscapes(t *testing.T) {
	cases := []struct {
		path, target string
		escapes      bool
	}{
		{"a", "b", false}, {"a", "../b", true}, {"d/a", "../b", false}, {"d/a", "../../b", true},
		{"a", "/etc/x", false}, {"a", "/../x", true}, {"d/e/a", "../../x/../y", false}, {"d/a", "x/../../../y", true},
	}
	for _, c := range cases {
		if got := symlinkEscapes(strings.Split(c.path, "/"), c.target); got != c.escapes {
			t.Errorf("symlinkEscapes(%q -> %q) = %v", c.path, c.target, got)
		}
	}
}

func TestCreate(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "a", "")
	mustCreate(t, s, "b", "a")
	l, err := s.Layer("b")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.Layer("a")
	if l.Parent != "a" || len(l.Lower) != 1 || l.Lower[0] != a.Link || !a.Committed || len(a.Link) != 26 {
		t.Fatalf("layer b = %+v, a = %+v", l, a)
	}
	if target, _ := os.Readlink(filepath.Join(s.Root, "l", a.Link)); target != "../a/diff" {
		t.Errorf("l/%s -> %q", a.Link, target)
	}
	if b, _ := os.ReadFile(filepath.Join(s.Root, "b", "lower")); string(b) != "l/"+a.Link {
		t.Errorf("lower = %q", b)
	}
	if _, err := s.Create("a", ""); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("duplicate id: %v", err)
	}
	if _, err := s.Create("c", "nope"); !errors.Is(err, ErrNotExist) {
		t.Errorf("missing parent: %v", err)
	}
	for _, bad := range []string{"../x", "a/b", "l", "-x", "a:b", "a,b"} {
		if _, err := s.Create(bad, ""); err == nil {
			t.Errorf("id %q accepted", bad)
		}
	}
	id, err := s.Create("", "b")
	if err != nil || len(id) != 64 {
		t.Fatalf("random id %q: %v", id, err)
	}
	if err := s.Remove("a", false); err == nil || !strings.Contains(err.Error(), "children") {
		t.Errorf("rm a with children: %v", err)
	}
	if err := s.Remove(id, false); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.Layer("b"); l.Committed {
		t.Error("b still committed after its only child went")
	}
	if s.Exists(id) {
		t.Error("removed layer still there")
	}
}

func TestDepthLimit(t *testing.T) {
	s := newStore(t)
	// A hand-written lower file 500 deep: a child would be 501 lowers.
	mustCreate(t, s, "deep", "")
	lids := make([]string, MaxDepth)
	for i := range lids {
		lids[i] = newLID()
	}
	os.WriteFile(filepath.Join(s.Root, "deep", "lower"), []byte(formatLower(lids)), 0o644)
	if _, err := s.Create("child", "deep"); err == nil || !strings.Contains(err.Error(), "at most 500") {
		t.Fatalf("501 lowers: %v", err)
	}
}

// sampleTar has every kind of entry a layer carries.
func sampleTar(t testing.TB, withOwners bool) []byte {
	owner := func(e tarEntry) tarEntry {
		if withOwners {
			e.uid, e.gid = 1000, 100
		}
		return e
	}
	return mkTar(t,
		tarEntry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		owner(tarEntry{name: "etc/passwd", body: "root:x:0:0", mode: 0o644, xattrs: map[string]string{"user.a": "1", "user.b": "\x00\x01"}}),
		tarEntry{name: "etc/hard", typ: tar.TypeLink, link: "etc/passwd"},
		tarEntry{name: "etc/sym", typ: tar.TypeSymlink, link: "passwd"},
		tarEntry{name: "etc/abs", typ: tar.TypeSymlink, link: "/proc/mounts"},
		owner(tarEntry{name: "bin/suid", body: "#!", mode: 0o4755}),
		tarEntry{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
		tarEntry{name: "opq/.wh..wh..opq"}, // before its directory's header
		tarEntry{name: "opq/", typ: tar.TypeDir, mode: 0o700},
		tarEntry{name: "opq/kept", body: "k"},
		tarEntry{name: "etc/.wh.shadow"},
		tarEntry{name: ".wh.gone"},
		tarEntry{name: ".wh..wh.plnk"},
		tarEntry{name: "sticky/", typ: tar.TypeDir, mode: 0o1777},
	)
}

func TestApplyConvertsMarkers(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "base", "")
	mustApply(t, s, "base", mkTar(t, tarEntry{name: "etc/shadow", body: "s"}, tarEntry{name: "gone", body: "g"},
		tarEntry{name: "opq/old", body: "o"}, tarEntry{name: "new/x", body: "x"}))
	mustCreate(t, s, "top", "base")
	mustApply(t, s, "top", sampleTar(t, os.Geteuid() == 0))
	diff := filepath.Join(s.Root, "top", "diff")
	for _, wo := range []string{"etc/shadow", "gone"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(diff, wo), &st); err != nil || !whiteout.IsWhiteoutStat(&st) {
			t.Errorf("%s: not a whiteout (%v)", wo, err)
		}
	}
	if v, _ := cow.Lgetxattr(filepath.Join(diff, "opq"), s.NS.Key(whiteout.Opaque)); string(v) != "y" {
		t.Errorf("opq: X(opaque) = %q", v)
	}
	for _, junk := range []string{".wh..wh.plnk", "opq/.wh..wh..opq", "etc/.wh.shadow", ".wh.gone"} {
		if _, err := os.Lstat(filepath.Join(diff, junk)); err == nil {
			t.Errorf("%s left in the layer", junk)
		}
	}
	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(diff, "etc/passwd"), &a)
	unix.Lstat(filepath.Join(diff, "etc/hard"), &b)
	if a.Ino != b.Ino || a.Mode&0o7777 != 0o644 {
		t.Errorf("hard link: inodes %d %d mode %o", a.Ino, b.Ino, a.Mode)
	}
	if os.Geteuid() == 0 && (a.Uid != 1000 || a.Gid != 100) {
		t.Errorf("owner %d:%d", a.Uid, a.Gid)
	}
	if a.Mtim.Nsec != 123456789+0 && time.Unix(a.Mtim.Unix()).Sub(t0) != time.Second {
		t.Errorf("mtime %v, want %v", time.Unix(a.Mtim.Unix()), t0.Add(time.Second))
	}
	var st unix.Stat_t
	unix.Lstat(filepath.Join(diff, "bin/suid"), &st)
	if os.Geteuid() != 0 {
		// An ordinary user keeps what it cannot set (a root-owned
		// setuid file) in the override xattr, as containers/storage.
		v, err := cow.Lgetxattr(filepath.Join(diff, "bin/suid"), whiteout.OverrideStatContainers)
		o, perr := whiteout.ParseOverrideStat(v)
		if err != nil || perr != nil {
			t.Fatalf("bin/suid: override xattr %q: %v %v", v, err, perr)
		}
		o.Apply(&st)
	}
	if st.Mode&0o7777 != 0o4755 {
		t.Errorf("suid mode %o", st.Mode&0o7777)
	}
	// No apply scratch is left beside diff/.
	names, _ := os.ReadDir(filepath.Join(s.Root, "top"))
	for _, n := range names {
		if strings.HasPrefix(n.Name(), applyPrefix) {
			t.Errorf("left %s", n.Name())
		}
	}
}

func TestApplyPrunesWhiteoutsWithNothingBelow(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "base", "")
	mustApply(t, s, "base", mkTar(t, tarEntry{name: "d/x", body: "x"}))
	mustCreate(t, s, "top", "base")
	mustApply(t, s, "top", mkTar(t,
		tarEntry{name: "d/.wh.x"},          // d merges with base: kept
		tarEntry{name: "new/.wh.y"},        // nothing below new/: dropped
		tarEntry{name: "d/o/.wh..wh..opq"}, // opaque: nothing below
		tarEntry{name: "d/o/.wh.z"},
	))
	diff := filepath.Join(s.Root, "top", "diff")
	if _, err := os.Lstat(filepath.Join(diff, "d/x")); err != nil {
		t.Errorf("d/x whiteout dropped: %v", err)
	}
	for _, p := range []string{"new/y", "d/o/z"} {
		if _, err := os.Lstat(filepath.Join(diff, p)); err == nil {
			t.Errorf("%s: whiteout kept in a directory with nothing below", p)
		}
	}
}

func TestApplyCompressed(t *testing.T) {
	data := mkTar(t, tarEntry{name: "f", body: "compressed"})
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	ze, _ := zstd.NewWriter(&zs)
	ze.Write(data)
	ze.Close()
	for name, b := range map[string][]byte{"plain": data, "gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		s := newStore(t)
		mustCreate(t, s, "ly", "")
		ap, err := s.ApplyDiff("ly", bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, _ := os.ReadFile(filepath.Join(s.Root, "ly/diff/f")); string(got) != "compressed" {
			t.Errorf("%s: f = %q", name, got)
		}
		if ap.Size != int64(len(data)) {
			t.Errorf("%s: size %d, want %d", name, ap.Size, len(data))
		}
	}
}

func TestDiffApplyRoundTrip(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "base", "")
	mustApply(t, s, "base", mkTar(t, tarEntry{name: "etc/shadow", body: "s"}, tarEntry{name: "gone", body: "g"},
		tarEntry{name: "opq/old", body: "o"}))
	mustCreate(t, s, "top", "base")
	mustApply(t, s, "top", sampleTar(t, os.Geteuid() == 0))
	diff := filepath.Join(s.Root, "top", "diff")
	// A client xattr that looks like overlay metadata is stored escaped and
	// must come back escaped, not as metadata.
	if err := unix.Lsetxattr(filepath.Join(diff, "etc/passwd"), s.NS.Prefix()+"overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		os.Lchown(filepath.Join(diff, "etc/sym"), 7, 8)
		if err := unix.Mknod(filepath.Join(diff, "run/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := s.Diff("top", &out); err != nil {
		t.Fatal(err)
	}
	// The tarball has OCI markers, never overlay metadata.
	tr := tar.NewReader(bytes.NewReader(out.Bytes()))
	var names []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr."+s.NS.Prefix()) && !strings.HasPrefix(k, "SCHILY.xattr."+s.NS.Prefix()+"opaque") {
				t.Errorf("%s: exported %s", h.Name, k)
			}
			if k == "SCHILY.xattr."+s.NS.Key(whiteout.Opaque) && h.Name != "etc/passwd" && h.Name != "etc/hard" {
				t.Errorf("%s: exported X(opaque)", h.Name)
			}
		}
	}
	for _, want := range []string{"etc/.wh.shadow", ".wh.gone", "opq/.wh..wh..opq"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("diff lacks %s: %q", want, names)
		}
	}
	mustCreate(t, s, "copy", "base")
	mustApply(t, s, "copy", out.Bytes())
	diffTrees(t, "apply(diff(top))", tree(t, filepath.Join(s.Root, "copy", "diff")), tree(t, diff))
}

// hostile tarballs: each must be refused and leave nothing anywhere.
func TestApplyRefusesHostile(t *testing.T) {
	cases := map[string][]tarEntry{
		"absolute path":     {{name: "/SENTINEL/pwned", body: "x"}},
		"dotdot":            {{name: "a/../../SENTINEL/pwned", body: "x"}},
		"symlink escape":    {{name: "esc", typ: tar.TypeSymlink, link: "../../../SENTINEL"}},
		"write via symlink": {{name: "in", typ: tar.TypeSymlink, link: "/"}, {name: "in/pwned", body: "x"}},
		"dir via symlink":   {{name: "in", typ: tar.TypeSymlink, link: "x"}, {name: "in/sub/", typ: tar.TypeDir}},
		"hardlink outside":  {{name: "h", typ: tar.TypeLink, link: "../../../SENTINEL/file"}},
		"hardlink abs":      {{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}},
		"hardlink via sym":  {{name: "s", typ: tar.TypeSymlink, link: "/etc"}, {name: "h", typ: tar.TypeLink, link: "s/passwd"}},
		"wh name":           {{name: "d/.wh."}},
		"wh dotdot":         {{name: ".wh..."}},
		"wh parent":         {{name: ".wh.x/y", body: "x"}},
	}
	if os.Geteuid() != 0 {
		cases["device"] = []tarEntry{{name: "dev/sda", typ: tar.TypeBlock, major: 8}}
	}
	for name, ents := range cases {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			sentinel := filepath.Join(filepath.Dir(s.Root), "SENTINEL")
			os.Mkdir(sentinel, 0o755)
			os.WriteFile(filepath.Join(sentinel, "file"), []byte("keep"), 0o644)
			mustCreate(t, s, "ly", "")
			before := tree(t, filepath.Dir(s.Root))
			_, err := s.ApplyDiff("ly", bytes.NewReader(mkTar(t, append([]tarEntry{{name: "ok", body: "fine"}}, ents...)...)))
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("got %v, want refused", err)
			}
			after := tree(t, filepath.Dir(s.Root))
			for _, k := range []string{"root/ovlctl/lock", "root/ly"} { // the lock, and the dir the scratch was made in
				delete(before, k)
				delete(after, k)
			}
			diffTrees(t, "store and sentinel after a refused apply", after, before)
		})
	}
}

func TestApplyRefusesNonEmptyOrMissing(t *testing.T) {
	s := newStore(t)
	if _, err := s.ApplyDiff("none", bytes.NewReader(nil)); !errors.Is(err, ErrNotExist) {
		t.Errorf("missing layer: %v", err)
	}
	mustCreate(t, s, "ly", "")
	mustApply(t, s, "ly", mkTar(t, tarEntry{name: "f", body: "1"}))
	if _, err := s.ApplyDiff("ly", bytes.NewReader(mkTar(t, tarEntry{name: "g", body: "2"}))); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty layer: %v", err)
	}
	mustCreate(t, s, "m", "")
	if _, err := s.ApplyDiff("m", strings.NewReader("this is not a tarball at all, not even close................")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestInitLayer(t *testing.T) {
	s := newStore(t)
	mustCreate(t, s, "img", "")
	if _, err := s.InitLayer("c", "img"); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(s.Root, "c-init", "diff")
	for _, f := range []string{"etc/hosts", "etc/hostname", "etc/resolv.conf"} {
		if fi, err := os.Lstat(filepath.Join(d, f)); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
			t.Errorf("%s: %v %v", f, fi, err)
		}
	}
	if l, _ := os.Readlink(filepath.Join(d, "etc/mtab")); l != "/proc/mounts" {
		t.Errorf("etc/mtab -> %q", l)
	}
	for _, dd := range []string{"dev", "proc", "sys"} {
		if fi, err := os.Lstat(filepath.Join(d, dd)); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", dd, err)
		}
	}
	if l, _ := s.Layer("c"); l.Parent != "c-init" {
		t.Errorf("c's parent %q", l.Parent)
	}
}
