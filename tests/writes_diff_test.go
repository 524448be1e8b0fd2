package tests

// TestWriteDifferential: the same random write workload through ovlfs and
// through the kernel's overlayfs, on byte-identical layer sets, compared op by
// op (errno and data), then as whole trees, then cross-mounted (each upper
// read by the other implementation).
//
// OVLFS_DIFF_SEEDS (default 50), OVLFS_DIFF_OPS (default 300),
// OVLFS_DIFF_SEED0 (first seed, default 1), OVLFS_DIFF_KOPTS (extra kernel
// options, default "redirect_dir=on"; "-" for none) change the run.
// OVLFS_DIFF_VERBOSE=1 logs every op and the layers; OVLFS_DIFF_NOHARDLINKS=1
// makes lower layers without hard links.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func wrEnvInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

// wrKernelOpts are the kernel overlay options of the differential. The
// kernel's default here is redirect_dir=off with redirect_always_follow=Y,
// i.e. "follow": it reads redirects but answers EXDEV to a rename of a
// directory that has lower layers. ovlfs (trusted NS) writes redirects, so
// redirect_dir=on is the kernel mode that does what ovlfs does.
func wrKernelOpts() []string {
	v, ok := os.LookupEnv("OVLFS_DIFF_KOPTS")
	if !ok {
		return []string{"redirect_dir=on"}
	}
	if v == "" || v == "-" {
		return nil
	}
	return strings.Split(v, ",")
}

var wrNames = []string{"a", "b", "c", "d", "e", "f", "etc", "usr", "lib", "x y", "n1", "n2", "n3", "sub", "deep", "ünï", ".h"}

var (
	wrUIDs      = []int{0, 0, 0, 1000, 65534}
	wrFileModes = []uint32{0o644, 0o644, 0o600, 0o755, 0o444, 0o4755, 0o2755, 0o777, 0o1644}
	wrDirModes  = []uint32{0o755, 0o755, 0o700, 0o1777, 0o2775, 0o711}
)

// wrGenLayers makes two lower layers in dir (returned topmost first). The
// content depends only on seed, so two calls make byte-identical trees.
func wrGenLayers(t testing.TB, dir string, seed int64) []string {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	bot, top := filepath.Join(dir, "l1"), filepath.Join(dir, "l0")
	mkdirs(t, bot)
	mkdirs(t, top)
	j := filepath.Join
	// Bottom layer.
	dirs := []string{"."}
	var files, nondirs []string
	exists := map[string]bool{".": true}
	newName := func(parent string) string {
		for i := 0; i < 10; i++ {
			n := j(parent, wrNames[rng.Intn(len(wrNames))])
			if !exists[n] {
				return n
			}
		}
		return ""
	}
	xattrs := func(p string) {
		for i := rng.Intn(3); i > 0; i-- {
			v := make([]byte, rng.Intn(30))
			rng.Read(v)
			setXattr(t, p, fmt.Sprintf("user.k%d", rng.Intn(3)), v)
		}
	}
	for i := 0; i < 6+rng.Intn(6); i++ {
		parent := dirs[rng.Intn(len(dirs))]
		if strings.Count(parent, "/") >= 2 {
			continue
		}
		n := newName(parent)
		if n == "" {
			continue
		}
		p := j(bot, n)
		mkdirMode(t, p, 0o755)
		chown(t, p, wrUIDs[rng.Intn(len(wrUIDs))], wrUIDs[rng.Intn(len(wrUIDs))])
		chmod(t, p, wrDirModes[rng.Intn(len(wrDirModes))])
		xattrs(p)
		dirs = append(dirs, n)
		exists[n] = true
	}
	writeData := func(p string) {
		var data []byte
		switch rng.Intn(6) {
		case 0:
		case 1:
			data = make([]byte, 64<<10+rng.Intn(200<<10))
		case 2: // sparse: holes with a few 4 KiB blocks of data
			size := int64(1<<20 + rng.Intn(4<<20))
			writeFile(t, p, nil, 0o644)
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for k := rng.Intn(3); k >= 0; k-- {
				b := make([]byte, 4096)
				rng.Read(b)
				if _, err := f.WriteAt(b, rng.Int63n(size-4096)); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			f.Close()
			return
		default:
			data = make([]byte, rng.Intn(5000))
		}
		rng.Read(data)
		writeFile(t, p, data, 0o644)
	}
	for i := 0; i < 12+rng.Intn(12); i++ {
		parent := dirs[rng.Intn(len(dirs))]
		n := newName(parent)
		if n == "" {
			continue
		}
		p := j(bot, n)
		exists[n] = true
		nondirs = append(nondirs, n)
		switch r := rng.Intn(10); {
		case r < 6:
			writeData(p)
			chown(t, p, wrUIDs[rng.Intn(len(wrUIDs))], wrUIDs[rng.Intn(len(wrUIDs))])
			chmod(t, p, wrFileModes[rng.Intn(len(wrFileModes))])
			xattrs(p)
			files = append(files, n)
		case r < 8: // relative symlink to something in the tree
			target := dirs[rng.Intn(len(dirs))]
			if len(files) > 0 && rng.Intn(2) == 0 {
				target = files[rng.Intn(len(files))]
			}
			rel, _ := filepath.Rel(filepath.Dir(n), target)
			symlink(t, rel, p)
			chown(t, p, wrUIDs[rng.Intn(len(wrUIDs))], 0)
		case r < 9:
			mkFifo(t, p, 0o644)
		default: // hard link
			if len(files) == 0 || os.Getenv("OVLFS_DIFF_NOHARDLINKS") != "" {
				mkFifo(t, p, 0o600)
				continue
			}
			hardlink(t, j(bot, files[rng.Intn(len(files))]), p)
		}
	}
	// Top layer: merging dirs, opaque dirs, whiteouts, new and replaced files.
	topDirs := map[string]bool{".": true} // dir in top that merges the bottom one
	used := map[string]bool{}
	var ensure func(d string) bool
	ensure = func(d string) bool {
		if d == "." {
			return true
		}
		if m, ok := topDirs[d]; ok {
			return m
		}
		if used[d] {
			return false // whited out in this layer
		}
		if !ensure(filepath.Dir(d)) {
			return false
		}
		p := j(top, d)
		mkdirMode(t, p, wrDirModes[rng.Intn(len(wrDirModes))])
		topDirs[d] = true
		return true
	}
	for i := 0; i < 4+rng.Intn(8); i++ {
		switch r := rng.Intn(10); {
		case r < 3: // whiteout over a bottom entry
			all := append(append([]string{}, dirs[1:]...), nondirs...)
			n := all[rng.Intn(len(all))]
			if used[n] || !ensure(filepath.Dir(n)) {
				continue
			}
			if st, err := os.Lstat(j(top, n)); err == nil || st != nil {
				continue
			}
			mkWhiteout(t, j(top, n))
			used[n] = true
		case r < 5: // opaque dir over a bottom dir, with a file in it
			if len(dirs) < 2 {
				continue
			}
			d := dirs[1+rng.Intn(len(dirs)-1)]
			if used[d] || topDirs[d] || !ensure(filepath.Dir(d)) {
				continue
			}
			if _, err := os.Lstat(j(top, d)); err == nil {
				continue
			}
			mkdirMode(t, j(top, d), 0o755)
			setOpaque(t, j(top, d))
			topDirs[d] = false
			used[d] = true
			writeData(j(top, d, "in-opaque"))
		case r < 7: // merging dir, with a new file
			d := dirs[rng.Intn(len(dirs))]
			if used[d] || !ensure(d) {
				continue
			}
			n := j(d, "top-"+wrNames[rng.Intn(len(wrNames))])
			if _, err := os.Lstat(j(top, n)); err == nil {
				continue
			}
			writeData(j(top, n))
			xattrs(j(top, n))
		default: // a bottom file replaced by a top one
			if len(files) == 0 {
				continue
			}
			f := files[rng.Intn(len(files))]
			if used[f] || !ensure(filepath.Dir(f)) {
				continue
			}
			if _, err := os.Lstat(j(top, f)); err == nil {
				continue
			}
			writeData(j(top, f))
			chmod(t, j(top, f), wrFileModes[rng.Intn(len(wrFileModes))])
			used[f] = true
		}
	}
	return []string{top, bot}
}

// wrNode is one entry of a walked tree.
type wrNode struct {
	path string
	typ  string
}

// wrWalk lists every entry under root (no symlink following), sorted.
func wrWalk(root string) []wrNode {
	var out []wrNode
	var walk func(rel string)
	walk = func(rel string) {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(root, rel), &st) != nil {
			return
		}
		typ := fileType(st.Mode)
		out = append(out, wrNode{rel, typ})
		if typ != "dir" {
			return
		}
		names, _ := readdirNames(filepath.Join(root, rel))
		sort.Strings(names)
		for _, n := range names {
			walk(filepath.Join(rel, n))
		}
	}
	walk(".")
	return out
}

// wrEntry describes one path as a client sees it (not recursive).
func wrEntry(root, rel string) string {
	p := filepath.Join(root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return "lstat:" + errName(err)
	}
	typ := fileType(st.Mode)
	s := fmt.Sprintf("%s %04o %d:%d", typ, st.Mode&0o7777, st.Uid, st.Gid)
	switch typ {
	case "file":
		h, err := hashFile(p)
		if err != nil {
			h = err.Error()
		}
		s += fmt.Sprintf(" size=%d sha=%s", st.Size, h)
	case "symlink":
		tg, _ := os.Readlink(p)
		s += " -> " + tg
	case "dir":
		names, err := readdirNames(p)
		if err != nil {
			s += " readdir:" + errName(err)
		}
		sort.Strings(names)
		s += fmt.Sprintf(" %q", names)
	case "chr", "blk":
		s += fmt.Sprintf(" rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if x, err := userXattrs(p); err != nil {
		s += " xattrs:" + err.Error()
	} else if len(x) > 0 {
		s += fmt.Sprintf(" %q", x)
	}
	return s
}

func wrRes(err error) string {
	if err == nil {
		return "ok"
	}
	return errName(err)
}

// wrOp is one operation, run by path on each side.
type wrOp struct {
	desc  string
	run   func(root string) string
	paths []string // checked on both sides after the op (and their parents)
	// touched: paths whose mtime the op changes or that it moves/removes.
	touched []string
	// utimes is set when the op sets the mtime of its first path.
	utimes bool
}

const (
	wrEmul = "EXDEV+mv:"
	wrXchg = "EXDEV+3renames:"
)

// wrOpenNB opens without following a final symlink and without blocking on FIFOs.
func wrOpenNB(p string, flags int, mode uint32) (int, error) {
	return unix.Open(p, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, mode)
}

// wrRemoveAll is rm -rf: depth first, in sorted order; returns how many
// entries went and the first error.
func wrRemoveAll(p string) string {
	n := 0
	var firstErr error
	var rm func(p string)
	rm = func(p string) {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			names, err := readdirNames(p)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			sort.Strings(names)
			for _, c := range names {
				rm(filepath.Join(p, c))
			}
			if err := unix.Rmdir(p); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
		} else if err := unix.Unlink(p); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		n++
	}
	rm(p)
	return fmt.Sprintf("removed %d, %s", n, wrRes(firstErr))
}

// wrCopyTree copies src to dst as mv(1) does across filesystems (cp -a):
// content, mode, owner, user xattrs, mtime, symlinks, FIFOs, hard links
// within the tree.
func wrCopyTree(src, dst string) error {
	links := map[[2]uint64]string{}
	var cp func(s, d string) error
	cp = func(s, d string) error {
		var st unix.Stat_t
		if err := unix.Lstat(s, &st); err != nil {
			return err
		}
		typ := st.Mode & unix.S_IFMT
		switch typ {
		case unix.S_IFDIR:
			if err := unix.Mkdir(d, 0o700); err != nil {
				return err
			}
			names, err := readdirNames(s)
			if err != nil {
				return err
			}
			sort.Strings(names)
			for _, n := range names {
				if err := cp(filepath.Join(s, n), filepath.Join(d, n)); err != nil {
					return err
				}
			}
		case unix.S_IFREG:
			key := [2]uint64{st.Dev, st.Ino}
			if st.Nlink > 1 {
				if first, ok := links[key]; ok {
					return unix.Link(first, d)
				}
				links[key] = d
			}
			in, err := os.Open(s)
			if err != nil {
				return err
			}
			out, err := os.OpenFile(d, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				in.Close()
				return err
			}
			_, err = io.Copy(out, in)
			in.Close()
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case unix.S_IFLNK:
			tg, err := os.Readlink(s)
			if err != nil {
				return err
			}
			if err := os.Symlink(tg, d); err != nil {
				return err
			}
		default:
			if err := unix.Mknod(d, typ|0o600, int(st.Rdev)); err != nil {
				return err
			}
		}
		if x, _ := cowListUser(s); len(x) > 0 {
			for _, k := range x {
				if v, err := getXattr(s, k); err == nil {
					if err := unix.Lsetxattr(d, k, v, 0); err != nil {
						return err
					}
				}
			}
		}
		if err := unix.Lchown(d, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if typ != unix.S_IFLNK {
			if err := unix.Chmod(d, st.Mode&0o7777); err != nil {
				return err
			}
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, d, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
	}
	return cp(src, dst)
}

// cowListUser lists the user.* xattr names of p.
func cowListUser(p string) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return nil, err
	}
	buf := make([]byte, sz+256)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range strings.Split(string(buf[:sz]), "\x00") {
		if strings.HasPrefix(n, "user.") {
			out = append(out, n)
		}
	}
	return out, nil
}

// wrMv renames like mv(1): on EXDEV for a directory it copies, then removes.
func wrMv(root, src, dst string, flags int) string {
	s, d := filepath.Join(root, src), filepath.Join(root, dst)
	err := unix.Renameat2(unix.AT_FDCWD, s, unix.AT_FDCWD, d, uint(flags))
	if errors.Is(err, unix.EXDEV) && flags&unix.RENAME_EXCHANGE != 0 {
		// The kernel without redirect_dir=on (and ovlfs) refuse to exchange
		// directories that merge lower layers; an app then swaps through a
		// temporary name.
		tmp := filepath.Join(filepath.Dir(s), ".wr-xchg")
		if err := unix.Rename(s, tmp); err != nil {
			return wrXchg + "1:" + errName(err)
		}
		if err := unix.Rename(d, s); err != nil {
			return wrXchg + "2:" + errName(err)
		}
		if err := unix.Rename(tmp, d); err != nil {
			return wrXchg + "3:" + errName(err)
		}
		return wrXchg + "ok"
	}
	if !errors.Is(err, unix.EXDEV) || flags&unix.RENAME_EXCHANGE != 0 {
		return wrRes(err)
	}
	var sst, dst2 unix.Stat_t
	if unix.Lstat(s, &sst) != nil || sst.Mode&unix.S_IFMT != unix.S_IFDIR {
		return wrRes(err)
	}
	if unix.Lstat(d, &dst2) == nil {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return wrEmul + "EEXIST"
		}
		if dst2.Mode&unix.S_IFMT != unix.S_IFDIR {
			return wrEmul + "ENOTDIR"
		}
		if err := unix.Rmdir(d); err != nil {
			return wrEmul + errName(err)
		}
	}
	if err := wrCopyTree(s, d); err != nil {
		return wrEmul + "copy: " + errName(err)
	}
	return wrEmul + wrRes(nil) + " rm: " + wrRemoveAll(s)
}

// wrGenOp draws the next op from rng, choosing paths from the current tree.
func wrGenOp(rng *rand.Rand, tree []wrNode) wrOp {
	var all, files, dirs []string
	for _, n := range tree {
		if n.path != "." {
			all = append(all, n.path)
		}
		switch n.typ {
		case "file":
			files = append(files, n.path)
		case "dir":
			dirs = append(dirs, n.path)
		}
	}
	pick := func(l []string) string {
		if len(l) == 0 {
			return wrNames[rng.Intn(len(wrNames))]
		}
		return l[rng.Intn(len(l))]
	}
	newPath := func() string {
		d := pick(dirs)
		var n string
		if rng.Intn(3) == 0 {
			n = fmt.Sprintf("new%d", rng.Intn(8))
		} else {
			n = wrNames[rng.Intn(len(wrNames))]
		}
		return filepath.Join(d, n)
	}
	some := func() string {
		if rng.Intn(10) < 7 {
			return pick(all)
		}
		return newPath()
	}
	someFile := func() string {
		if rng.Intn(10) < 8 && len(files) > 0 {
			return pick(files)
		}
		return some()
	}
	someDir := func() string {
		if rng.Intn(10) < 8 && len(dirs) > 1 {
			return pick(dirs[1:])
		}
		return some()
	}
	data := func(max int) []byte {
		b := make([]byte, 1+rng.Intn(max))
		rng.Read(b)
		return b
	}
	parent := func(p string) string { return filepath.Dir(p) }
	J := filepath.Join

	switch r := rng.Intn(100); {
	case r < 10: // open with flags, write
		p := someFile()
		flagSets := []int{
			unix.O_WRONLY | unix.O_CREAT, unix.O_RDWR | unix.O_CREAT | unix.O_EXCL,
			unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC, unix.O_WRONLY | unix.O_APPEND,
			unix.O_RDWR | unix.O_CREAT | unix.O_APPEND, unix.O_WRONLY | unix.O_TRUNC,
			unix.O_RDWR, unix.O_RDONLY | unix.O_CREAT,
		}
		fl := flagSets[rng.Intn(len(flagSets))]
		mode := []uint32{0o644, 0o600, 0o755, 0o4755}[rng.Intn(4)]
		b := data(9000)
		return wrOp{
			desc:  fmt.Sprintf("open(%q, %#o, %#o) + write %d bytes", p, fl, mode, len(b)),
			paths: []string{p}, touched: []string{p, parent(p)},
			run: func(root string) string {
				fd, err := wrOpenNB(J(root, p), fl, mode)
				if err != nil {
					return "open:" + wrRes(err)
				}
				defer unix.Close(fd)
				n, err := unix.Write(fd, b)
				var st unix.Stat_t
				unix.Fstat(fd, &st)
				return fmt.Sprintf("write:%d,%s size=%d", n, wrRes(err), st.Size)
			},
		}
	case r < 18: // pwrite at an offset (maybe past EOF)
		p := someFile()
		off := int64(rng.Intn(300 << 10))
		if rng.Intn(8) == 0 {
			off = int64(rng.Intn(16 << 20))
		}
		b := data(6000)
		return wrOp{
			desc:  fmt.Sprintf("pwrite(%q, %d bytes @%d)", p, len(b), off),
			paths: []string{p}, touched: []string{p},
			run: func(root string) string {
				fd, err := wrOpenNB(J(root, p), unix.O_WRONLY, 0)
				if err != nil {
					return "open:" + wrRes(err)
				}
				defer unix.Close(fd)
				n, err := unix.Pwrite(fd, b, off)
				return fmt.Sprintf("pwrite:%d,%s", n, wrRes(err))
			},
		}
	case r < 24: // read back at an offset
		p := someFile()
		off := int64(rng.Intn(200 << 10))
		n := 1 + rng.Intn(70000)
		return wrOp{
			desc: fmt.Sprintf("pread(%q, %d @%d)", p, n, off),
			run: func(root string) string {
				fd, err := wrOpenNB(J(root, p), unix.O_RDONLY, 0)
				if err != nil {
					return "open:" + wrRes(err)
				}
				defer unix.Close(fd)
				buf := make([]byte, n)
				got, err := unix.Pread(fd, buf, off)
				if got < 0 {
					got = 0
				}
				h := sha256.Sum256(buf[:got])
				return fmt.Sprintf("pread:%d,%s %s", got, wrRes(err), hex.EncodeToString(h[:8]))
			},
		}
	case r < 29: // truncate (via an O_NOFOLLOW fd)
		p := someFile()
		size := int64(rng.Intn(100 << 10))
		if rng.Intn(4) == 0 {
			size = 0
		}
		return wrOp{
			desc:  fmt.Sprintf("truncate(%q, %d)", p, size),
			paths: []string{p}, touched: []string{p},
			run: func(root string) string {
				var st unix.Stat_t
				if unix.Lstat(J(root, p), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					return "symlink: skipped"
				}
				return wrRes(unix.Truncate(J(root, p), size))
			},
		}
	case r < 32: // fallocate
		p := someFile()
		modes := []int{0, unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE}
		m := modes[rng.Intn(len(modes))]
		off, ln := int64(rng.Intn(200<<10)), int64(1+rng.Intn(100<<10))
		return wrOp{
			desc:  fmt.Sprintf("fallocate(%q, mode %#x, @%d, %d)", p, m, off, ln),
			paths: []string{p}, touched: []string{p},
			run: func(root string) string {
				fd, err := wrOpenNB(J(root, p), unix.O_WRONLY, 0)
				if err != nil {
					return "open:" + wrRes(err)
				}
				defer unix.Close(fd)
				err = unix.Fallocate(fd, uint32(m), off, ln)
				var st unix.Stat_t
				unix.Fstat(fd, &st)
				return fmt.Sprintf("%s size=%d", wrRes(err), st.Size)
			},
		}
	case r < 39: // unlink
		p := some()
		return wrOp{desc: fmt.Sprintf("unlink(%q)", p), paths: []string{p}, touched: []string{p, parent(p)},
			run: func(root string) string { return wrRes(unix.Unlink(J(root, p))) }}
	case r < 44: // mkdir
		p := newPath()
		if rng.Intn(4) == 0 {
			p = some()
		}
		mode := wrDirModes[rng.Intn(len(wrDirModes))]
		return wrOp{desc: fmt.Sprintf("mkdir(%q, %#o)", p, mode), paths: []string{p}, touched: []string{p, parent(p)},
			run: func(root string) string { return wrRes(unix.Mkdir(J(root, p), mode)) }}
	case r < 48: // rmdir
		p := someDir()
		return wrOp{desc: fmt.Sprintf("rmdir(%q)", p), paths: []string{p}, touched: []string{p, parent(p)},
			run: func(root string) string { return wrRes(unix.Rmdir(J(root, p))) }}
	case r < 61: // rename
		var src string
		if rng.Intn(3) == 0 {
			src = someDir()
		} else {
			src = some()
		}
		dst := newPath()
		if rng.Intn(10) < 4 {
			dst = some()
		}
		flags := 0
		switch rng.Intn(10) {
		case 0, 1:
			flags = unix.RENAME_NOREPLACE
		case 2, 3:
			flags = unix.RENAME_EXCHANGE
		}
		return wrOp{
			desc:  fmt.Sprintf("renameat2(%q, %q, %#x)", src, dst, flags),
			paths: []string{src, dst}, touched: []string{src, dst, parent(src), parent(dst)},
			run: func(root string) string { return wrMv(root, src, dst, flags) },
		}
	case r < 65: // link
		src, dst := someFile(), newPath()
		return wrOp{
			desc:  fmt.Sprintf("link(%q, %q)", src, dst),
			paths: []string{src, dst}, touched: []string{src, dst, parent(dst)},
			run: func(root string) string {
				err := unix.Link(J(root, src), J(root, dst))
				if err != nil {
					return wrRes(err)
				}
				// The two names are one file: a write through one shows in the other.
				fd, err := wrOpenNB(J(root, dst), unix.O_WRONLY|unix.O_APPEND, 0)
				if err != nil {
					return "ok; open new name:" + wrRes(err)
				}
				unix.Write(fd, []byte("+link"))
				unix.Close(fd)
				return "ok; old name: " + wrEntry(root, src)
			},
		}
	case r < 68: // symlink, relative, in the tree
		dst := newPath()
		target := pick(all)
		rel, _ := filepath.Rel(filepath.Dir(dst), target)
		return wrOp{desc: fmt.Sprintf("symlink(%q, %q)", rel, dst), paths: []string{dst}, touched: []string{dst, parent(dst)},
			run: func(root string) string { return wrRes(unix.Symlink(rel, J(root, dst))) }}
	case r < 70: // mkfifo
		dst := newPath()
		return wrOp{desc: fmt.Sprintf("mkfifo(%q)", dst), paths: []string{dst}, touched: []string{dst, parent(dst)},
			run: func(root string) string { return wrRes(unix.Mkfifo(J(root, dst), 0o640)) }}
	case r < 74: // chmod
		p := some()
		mode := append(wrFileModes, wrDirModes...)[rng.Intn(len(wrFileModes)+len(wrDirModes))]
		return wrOp{desc: fmt.Sprintf("chmod(%q, %#o)", p, mode), paths: []string{p}, touched: []string{p},
			run: func(root string) string {
				var st unix.Stat_t
				if unix.Lstat(J(root, p), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					return "symlink: skipped"
				}
				return wrRes(unix.Chmod(J(root, p), mode))
			}}
	case r < 77: // chown
		p := some()
		uid, gid := wrUIDs[rng.Intn(len(wrUIDs))], wrUIDs[rng.Intn(len(wrUIDs))]
		if rng.Intn(3) == 0 {
			gid = -1
		}
		return wrOp{desc: fmt.Sprintf("lchown(%q, %d, %d)", p, uid, gid), paths: []string{p}, touched: []string{p},
			run: func(root string) string { return wrRes(unix.Lchown(J(root, p), uid, gid)) }}
	case r < 80: // utimes
		p := some()
		sec := int64(1_000_000_000 + rng.Intn(500_000_000))
		ts := []unix.Timespec{{Sec: sec, Nsec: 123}, {Sec: sec - 1000, Nsec: int64(rng.Intn(1e9))}}
		return wrOp{desc: fmt.Sprintf("utimensat(%q, mtime %d, nofollow)", p, ts[1].Sec), paths: []string{p}, utimes: true,
			run: func(root string) string {
				err := unix.UtimesNanoAt(unix.AT_FDCWD, J(root, p), ts, unix.AT_SYMLINK_NOFOLLOW)
				var st unix.Stat_t
				unix.Lstat(J(root, p), &st)
				if err == nil {
					return fmt.Sprintf("ok mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
				}
				return wrRes(err)
			}}
	case r < 84: // setxattr
		p := some()
		k := fmt.Sprintf("user.k%d", rng.Intn(4))
		v := data(60)
		fl := []int{0, 0, unix.XATTR_CREATE, unix.XATTR_REPLACE}[rng.Intn(4)]
		return wrOp{desc: fmt.Sprintf("lsetxattr(%q, %s, %d bytes, %d)", p, k, len(v), fl), paths: []string{p}, touched: []string{p},
			run: func(root string) string { return wrRes(unix.Lsetxattr(J(root, p), k, v, fl)) }}
	case r < 86: // removexattr
		p := some()
		k := fmt.Sprintf("user.k%d", rng.Intn(4))
		return wrOp{desc: fmt.Sprintf("lremovexattr(%q, %s)", p, k), paths: []string{p}, touched: []string{p},
			run: func(root string) string { return wrRes(unix.Lremovexattr(J(root, p), k)) }}
	case r < 89: // rm -rf of a subtree
		p := someDir()
		return wrOp{desc: fmt.Sprintf("rm -rf %q", p), paths: []string{p}, touched: []string{p, parent(p)},
			run: func(root string) string { return wrRemoveAll(J(root, p)) }}
	case r < 92: // rm -rf, then mkdir the same name, then a file in it
		p := someDir()
		return wrOp{desc: fmt.Sprintf("rm -rf %q; mkdir it; create %q/new", p, p), paths: []string{p, J(p, "new")}, touched: []string{p, parent(p)},
			run: func(root string) string {
				s := wrRemoveAll(J(root, p))
				s += "; mkdir " + wrRes(unix.Mkdir(J(root, p), 0o755))
				s += "; create " + wrRes(os.WriteFile(J(root, p, "new"), []byte("new"), 0o644))
				return s
			}}
	case r < 95: // rename into a dir, then delete it there
		src, d := some(), someDir()
		dst := J(d, "moved")
		return wrOp{desc: fmt.Sprintf("rename(%q, %q) then rm -rf it", src, dst), paths: []string{src, dst}, touched: []string{src, dst, parent(src), d},
			run: func(root string) string {
				s := wrMv(root, src, dst, 0)
				return s + "; " + wrRemoveAll(J(root, dst))
			}}
	default: // read-only queries
		p := some()
		return wrOp{desc: fmt.Sprintf("stat/readlink/listxattr/readdir(%q)", p),
			run: func(root string) string {
				s := wrEntry(root, p)
				_, err := getXattr(J(root, p), "user.nope")
				return s + " getxattr(nope):" + wrRes(err)
			}}
	}
}

// wrNormalize makes an emulated mv compare equal to a direct rename.
func wrNormalize(s string) string {
	if i := strings.Index(s, wrEmul); i >= 0 {
		rest := s[i+len(wrEmul):]
		if strings.HasPrefix(rest, "ok rm: removed ") {
			rest = "ok" + rest[strings.Index(rest, ", ok")+len(", ok"):]
		}
		return s[:i] + rest
	}
	if i := strings.Index(s, wrXchg); i >= 0 {
		return s[:i] + s[i+len(wrXchg):]
	}
	return s
}

// wrDivergence is the first difference found in one seed.
type wrDivergence struct {
	seed  int64
	op    int
	desc  string
	ovlfs string
	kern  string
}

func (d wrDivergence) String() string {
	return fmt.Sprintf("seed %d op %d: %s\n      ovlfs:  %s\n      kernel: %s", d.seed, d.op, d.desc, d.ovlfs, d.kern)
}

func TestWriteDifferential(t *testing.T) {
	requireMount(t)
	seeds := wrEnvInt("OVLFS_DIFF_SEEDS", 50)
	nOps := wrEnvInt("OVLFS_DIFF_OPS", 300)
	seed0 := int64(wrEnvInt("OVLFS_DIFF_SEED0", 1))
	kopts := wrKernelOpts()
	verbose := os.Getenv("OVLFS_DIFF_VERBOSE") != ""
	var (
		mu      sync.Mutex
		divs    []wrDivergence
		passed  int
		emulSum int
	)
	for seed := seed0; seed < seed0+int64(seeds); seed++ {
		var div *wrDivergence
		emul := 0
		ok := t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			div, emul = wrRunSeed(t, seed, nOps, kopts, verbose)
		})
		mu.Lock()
		emulSum += emul
		switch {
		case div != nil:
			divs = append(divs, *div)
			t.Logf("DIVERGENCE %s", div)
		case !ok:
			divs = append(divs, wrDivergence{seed: seed, op: -1, desc: "the seed's subtest failed (mount or setup); see its log"})
		default:
			passed++
		}
		mu.Unlock()
	}
	line := fmt.Sprintf("write differential: %d seeds passed, %d failed (%d ops each, kernel opts %q, %d EXDEV dir renames emulated as mv or 3 renames)", passed, len(divs), nOps, kopts, emulSum)
	t.Log(line)
	fmt.Println(line)
	if len(divs) > 0 {
		var b strings.Builder
		for i, d := range divs {
			if i == 20 {
				fmt.Fprintf(&b, "  ... and %d more\n", len(divs)-20)
				break
			}
			fmt.Fprintf(&b, "  %s\n", d)
		}
		t.Errorf("%d of %d seeds diverged:\n%s", len(divs), seeds, b.String())
	}
}

// wrRunSeed runs one seed; it returns the first divergence (nil when none)
// and how many mv emulations happened.
func wrRunSeed(t *testing.T, seed int64, nOps int, kopts []string, verbose bool) (*wrDivergence, int) {
	base := t.TempDir()
	mk := func(side string) (lowers []string, upper, work string) {
		d := filepath.Join(base, side)
		lowers = wrGenLayers(t, d, seed)
		upper, work = filepath.Join(d, "upper"), filepath.Join(d, "work")
		mkdirs(t, upper)
		mkdirs(t, work)
		return
	}
	lowA, upA, wkA := mk("A")
	lowB, upB, wkB := mk("B")
	if a, b := snapshot(t, lowA[1]), snapshot(t, lowB[1]); len(diffSnapshots(a, b)) > 0 {
		t.Fatalf("the generator is not deterministic: %v", diffSnapshots(a, b))
	}
	if verbose {
		out, _ := exec.Command("sh", "-c", `cd "$1" && find l0 l1 -printf '%M %U:%G %s %n %p %l\n' && getfattr -R -d -m - l0 l1 2>/dev/null`, "sh", filepath.Join(base, "B")).CombinedOutput()
		t.Logf("layers of seed %d:\n%s", seed, out)
	}
	mntA := mountOvlfs(t, lowA, upA, wkA)
	mntB := mountKernel(t, lowB, upB, wkB, kopts...)
	if d := diffSnapshots(snapshot(t, mntA), snapshot(t, mntB)); len(d) > 0 {
		return &wrDivergence{seed: seed, op: -1, desc: "initial trees differ (before any write)", ovlfs: strings.Join(shortList(d), "; ")}, 0
	}
	rng := rand.New(rand.NewSource(seed*7919 + 17))
	mtimes := map[string]bool{} // paths whose mtime was set by utimes and not changed since
	emul := 0
	for i := 0; i < nOps; i++ {
		op := wrGenOp(rng, wrWalk(mntB))
		ra := op.run(mntA)
		rb := op.run(mntB)
		if strings.Contains(ra, wrEmul) || strings.Contains(rb, wrEmul) || strings.Contains(ra, wrXchg) || strings.Contains(rb, wrXchg) {
			emul++
		}
		if verbose {
			t.Logf("op %d: %s -> %s | %s", i, op.desc, ra, rb)
		}
		if wrNormalize(ra) != wrNormalize(rb) {
			return &wrDivergence{seed, i, op.desc, ra, rb}, emul
		}
		for _, tp := range op.touched {
			for p := range mtimes {
				if p == tp || strings.HasPrefix(p, tp+"/") {
					delete(mtimes, p)
				}
			}
		}
		if op.utimes && strings.HasPrefix(ra, "ok") {
			mtimes[op.paths[0]] = true
		}
		check := map[string]bool{}
		for _, p := range op.paths {
			check[p] = true
			check[filepath.Dir(p)] = true
		}
		var keys []string
		for p := range check {
			keys = append(keys, p)
		}
		sort.Strings(keys)
		for _, p := range keys {
			if ea, eb := wrEntry(mntA, p), wrEntry(mntB, p); ea != eb {
				return &wrDivergence{seed, i, op.desc + fmt.Sprintf(" (op result %s); then the state of %q differs", ra, p), ea, eb}, emul
			}
		}
		if (i+1)%50 == 0 || i == nOps-1 {
			if d := diffSnapshots(snapshot(t, mntA), snapshot(t, mntB)); len(d) > 0 {
				return &wrDivergence{seed, i, fmt.Sprintf("full tree compare after op %d (divergence from an op since op %d)", i, i-49), strings.Join(shortList(d), "; "), "(kernel tree)"}, emul
			}
			if d := wrMtimeDiff(mntA, mntB, mtimes); d != "" {
				return &wrDivergence{seed, i, "mtimes set by utimes", d, ""}, emul
			}
		}
	}
	want := snapshot(t, mntB)
	wantMt := wrMtimes(mntB, mtimes)
	unmountFuse(t, mntA)
	if err := unix.Unmount(mntB, 0); err != nil {
		t.Fatalf("umount %s: %v", mntB, err)
	}
	if bad := wrUpperJunk(upA); len(bad) > 0 {
		return &wrDivergence{seed, nOps, "ovlfs's upper holds fuse-overlayfs-format junk", strings.Join(shortList(bad), "; "), "none"}, emul
	}
	// Cross-mount: the kernel reads ovlfs's upper, ovlfs reads the kernel's.
	kA := mountKernel(t, lowA, upA, wkA, kopts...)
	if d := diffSnapshots(snapshot(t, kA), want); len(d) > 0 {
		return &wrDivergence{seed, nOps, "the kernel mounting ovlfs's upper shows a different tree", strings.Join(shortList(d), "; "), "(B's tree through the kernel)"}, emul
	}
	if d := wrMtimeCheck(kA, wantMt); d != "" {
		return &wrDivergence{seed, nOps, "the kernel mounting ovlfs's upper shows other mtimes (set by utimes)", d, ""}, emul
	}
	if err := unix.Unmount(kA, 0); err != nil {
		t.Fatalf("umount %s: %v", kA, err)
	}
	oB := mountOvlfs(t, lowB, upB, wkB)
	if d := diffSnapshots(snapshot(t, oB), want); len(d) > 0 {
		return &wrDivergence{seed, nOps, "ovlfs mounting the kernel's upper shows a different tree", strings.Join(shortList(d), "; "), "(B's tree through the kernel)"}, emul
	}
	if d := wrMtimeCheck(oB, wantMt); d != "" {
		return &wrDivergence{seed, nOps, "ovlfs mounting the kernel's upper shows other mtimes (set by utimes)", d, ""}, emul
	}
	unmountFuse(t, oB)
	return nil, emul
}

// wrMtimeDiff compares the mtimes of paths in both trees.
func wrMtimeDiff(a, b string, paths map[string]bool) string {
	var out []string
	for p := range paths {
		var sa, sb unix.Stat_t
		ea, eb := unix.Lstat(filepath.Join(a, p), &sa), unix.Lstat(filepath.Join(b, p), &sb)
		if ea != nil || eb != nil {
			continue
		}
		if sb.Mode&unix.S_IFMT != unix.S_IFDIR && sb.Nlink > 1 {
			// A write through another name of the file changes this mtime too,
			// and the op log does not know the names of an inode.
			continue
		}
		if sa.Mtim != sb.Mtim {
			out = append(out, fmt.Sprintf("%q mtime %d.%09d vs kernel %d.%09d", p, sa.Mtim.Sec, sa.Mtim.Nsec, sb.Mtim.Sec, sb.Mtim.Nsec))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// wrMtimes records the mtimes of paths under root.
func wrMtimes(root string, paths map[string]bool) map[string]unix.Timespec {
	out := map[string]unix.Timespec{}
	for p := range paths {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(root, p), &st) == nil {
			out[p] = st.Mtim
		}
	}
	return out
}

// wrMtimeCheck compares the mtimes under root with want.
func wrMtimeCheck(root string, want map[string]unix.Timespec) string {
	var out []string
	for p, w := range want {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			out = append(out, fmt.Sprintf("%q: %s", p, errName(err)))
		} else if st.Mtim != w {
			out = append(out, fmt.Sprintf("%q mtime %d.%09d, want %d.%09d", p, st.Mtim.Sec, st.Mtim.Nsec, w.Sec, w.Nsec))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// wrUpperJunk lists `.wh.*` names and user.fuseoverlayfs.* xattrs in an upper dir.
func wrUpperJunk(upper string) []string {
	var bad []string
	filepath.Walk(upper, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		if strings.HasPrefix(fi.Name(), ".wh.") {
			bad = append(bad, "name "+p)
		}
		if x, _ := listXattrs(p, func(n string) bool { return strings.HasPrefix(n, "user.fuseoverlayfs.") }); len(x) > 0 {
			bad = append(bad, fmt.Sprintf("xattrs %s: %q", p, x))
		}
		return nil
	})
	return bad
}
