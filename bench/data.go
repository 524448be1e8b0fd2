package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ovlfs/ovlfs/layout"
)

// dataVersion names the recipe below: change it when the data changes, and
// the next run prepares again (older data is left to rm -rf).
const dataVersion = "1"

// dataset is a stack of prepared lower layers that workloads mount.
type dataset struct {
	name   string
	layers []string // relative to the data dir, topmost first
	steps  []string // preparation steps that make them
}

var rootfsLayers = []string{"rootfs/1", "rootfs/2", "rootfs/3"}

var datasets = map[string]*dataset{
	"rootfs":   {"rootfs", rootfsLayers, []string{"rootfs", "lists"}},
	"stack53":  {"stack53", stacked(50), []string{"rootfs", "lists", "stack"}},
	"stack203": {"stack203", stacked(200), []string{"rootfs", "lists", "stack"}},
	"big":      {"big", []string{"big/1"}, []string{"big"}},
	"dir100k":  {"dir100k", []string{"dir100k/1", "dir100k/2", "dir100k/3"}, []string{"dir100k"}},
	"repo":     {"repo", []string{"repo/1", "repo/2"}, []string{"repo"}},
	"tree50k":  {"tree50k", []string{"tree50k/1", "tree50k/2", "tree50k/3"}, []string{"tree50k"}},
}

// stacked is n small layers on top of the rootfs: lookups of rootfs paths
// go through all of them.
func stacked(n int) []string {
	var l []string
	for i := n; i >= 1; i-- {
		l = append(l, fmt.Sprintf("stack/%03d", i))
	}
	return append(l, rootfsLayers...)
}

// step makes one piece of the data, once: a marker in .done/ says it is
// complete. Each step builds under a .tmp name and renames at the end.
type step struct {
	after []string
	make  func(b *bench) error
}

var steps = map[string]*step{
	"minbase":    {nil, (*bench).makeMinbase},
	"buildtools": {[]string{"minbase"}, (*bench).makeBuildTools},
	"rootfs":     {[]string{"buildtools"}, (*bench).makeRootfsTop},
	"lists":      {[]string{"rootfs"}, (*bench).makeLists},
	"repo":       {[]string{"rootfs"}, (*bench).makeRepo},
	"stack":      {nil, (*bench).makeStack},
	"big":        {nil, (*bench).makeBig},
	"dir100k":    {nil, (*bench).makeDir100k},
	"tree50k":    {nil, (*bench).makeTree50k},
}

// prepare makes the data the workloads need.
func (b *bench) prepare(ws []*workload) error {
	for _, w := range ws {
		for _, s := range datasets[w.data].steps {
			if err := b.need(s); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bench) need(name string) error {
	s := steps[name]
	for _, a := range s.after {
		if err := b.need(a); err != nil {
			return err
		}
	}
	marker := b.path(".done", name+"."+dataVersion)
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	logf("preparing %s in %s (once; the log is %s)", name, b.data, b.path("prepare.log"))
	start := time.Now()
	if err := s.make(b); err != nil {
		return fmt.Errorf("prepare %s: %w", name, err)
	}
	logf("prepared %s in %v", name, time.Since(start).Round(time.Second))
	os.MkdirAll(filepath.Dir(marker), 0o755)
	return os.WriteFile(marker, []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644)
}

func (b *bench) path(p ...string) string {
	return filepath.Join(append([]string{b.data}, p...)...)
}

// prepSh runs a bash script for the preparation, its output appended to
// prepare.log; a failure shows the log's tail.
func (b *bench) prepSh(script string) error {
	log := b.path("prepare.log")
	_, err := b.command(b.data, []string{"DEBIAN_FRONTEND=noninteractive"},
		[]string{"bash", "-c", "set -euo pipefail; exec >>'" + log + "' 2>&1; set -x; " + script}, 2*time.Hour)
	if err != nil {
		tail, _ := os.ReadFile(log)
		lines := strings.Split(strings.TrimSpace(string(tail)), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		return fmt.Errorf("%v; end of %s:\n%s", err, log, strings.Join(lines, "\n"))
	}
	return nil
}

// makeMinbase is the bottom rootfs layer: debootstrap --variant=minbase of
// the host's Debian release from the mirror apt uses.
func (b *bench) makeMinbase() error {
	dir := b.path("rootfs/3")
	if err := removeTree(dir + ".tmp"); err != nil {
		return err
	}
	mirror, suite := b.mirror, codename()
	if mirror == "" {
		mirror = aptMirror()
	}
	if err := b.prepSh(fmt.Sprintf("debootstrap --variant=minbase %s %q %s && cp -L /etc/resolv.conf %q/etc/resolv.conf",
		suite, dir+".tmp", mirror, dir+".tmp")); err != nil {
		return err
	}
	return os.Rename(dir+".tmp", dir)
}

// makeBuildTools is the middle layer: build-essential installed by apt in a
// chroot of the kernel overlay, whose upper becomes the layer (real
// whiteouts, opaque directories and copied-up files, as in an image).
func (b *bench) makeBuildTools() error {
	return b.layerByChroot("rootfs/2", []string{"rootfs/3"},
		"apt-get update && apt-get install -y --no-install-recommends build-essential && apt-get clean", nil)
}

// makeRootfsTop is the top layer: python3, 8 .debs for the dpkg workload and
// a generated C project for the make workload.
func (b *bench) makeRootfsTop() error {
	return b.layerByChroot("rootfs/1", []string{"rootfs/2", "rootfs/3"},
		"apt-get install -y --no-install-recommends python3 && apt-get clean && "+
			"apt-get install -y --download-only --no-install-recommends "+strings.Join(debPackages, " ")+" && "+
			"mkdir -p "+debDir+" && mv /var/cache/apt/archives/*.deb "+debDir+"/ && apt-get clean",
		func(mnt string) error { return writeMakeProject(filepath.Join(mnt, makeDir)) })
}

// Packages (with the dependencies the rootfs lacks: 8 .debs) that the dpkg
// workload installs, and where the data keeps them and the C project.
var debPackages = []string{"less", "tree", "bc", "file", "zstd", "xxd"}

const (
	debDir  = "/var/cache/ovlbench-debs"
	makeDir = "/usr/src/ovlbench-make"
)

// layerByChroot makes layer as the kernel overlay's upper over lowers while
// script runs chrooted in the merged view (with /dev, /proc and the host's
// resolver), then extra adds files through the mount.
func (b *bench) layerByChroot(layer string, lowers []string, script string, extra func(mnt string) error) error {
	tmp, work, mnt := b.path(layer+".tmp"), b.path("prep", "work"), b.path("prep", "mnt")
	for _, d := range []string{tmp, b.path("prep")} {
		if err := removeTree(d); err != nil {
			return err
		}
	}
	for _, d := range []string{tmp, work, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	m, err := b.mountAt(kernel, lowers, tmp, work, mnt, "redirect_dir=off,metacopy=off,index=off")
	if err != nil {
		return err
	}
	defer b.unmount(m)
	err = b.prepSh(fmt.Sprintf(`m=%q
mount --bind /dev "$m/dev"; mount -t proc proc "$m/proc"
mount --bind /etc/resolv.conf "$m/etc/resolv.conf"
PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$m" /bin/sh -c %q
umount "$m/etc/resolv.conf" "$m/proc" "$m/dev"`, mnt, script))
	if err == nil && extra != nil {
		err = extra(mnt)
	}
	b.unmount(m)
	if err != nil {
		return err
	}
	if err := removeTree(b.path("prep")); err != nil {
		return err
	}
	return os.Rename(tmp, b.path(layer))
}

// writeMakeProject writes a C project of 48 files that include the usual
// system headers, so that make -j2 reads many files from the rootfs.
func writeMakeProject(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	headers := []string{"stdio.h", "stdlib.h", "string.h", "math.h", "errno.h", "unistd.h", "fcntl.h",
		"sys/stat.h", "sys/types.h", "time.h", "ctype.h", "stdint.h", "pthread.h", "signal.h", "limits.h",
		"locale.h", "wchar.h", "sys/socket.h", "netinet/in.h", "dirent.h"}
	var main strings.Builder
	main.WriteString("#include <stdio.h>\n")
	const files = 48
	for i := 0; i < files; i++ {
		var c strings.Builder
		for _, h := range headers {
			fmt.Fprintf(&c, "#include <%s>\n", h)
		}
		fmt.Fprintf(&c, "static uint32_t t%d[256];\n", i)
		for f := 0; f < 12; f++ {
			fmt.Fprintf(&c, "double f%d_%d(int n) {\n\tdouble s = 0;\n\tfor (int i = 0; i < n; i++) {\n"+
				"\t\tt%d[i & 255] ^= (uint32_t)i * %du;\n\t\ts += sqrt((double)t%d[(i * 7) & 255]) / (1 + i %% %d);\n"+
				"\t}\n\treturn s + strlen(\"f%d_%d\");\n}\n", i, f, i, 2654435761+f, i, f+3, i, f)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("unit%02d.c", i)), []byte(c.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&main, "double f%d_0(int);\n", i)
	}
	main.WriteString("int main(void) {\n\tdouble s = 0;\n")
	for i := 0; i < files; i++ {
		fmt.Fprintf(&main, "\ts += f%d_0(1000);\n", i)
	}
	main.WriteString("\tprintf(\"%f\\n\", s);\n\treturn 0;\n}\n")
	if err := os.WriteFile(filepath.Join(dir, "main.c"), []byte(main.String()), 0o644); err != nil {
		return err
	}
	mk := "CFLAGS = -O2 -Wall\nOBJS = $(patsubst %.c,%.o,$(wildcard *.c))\nprog: $(OBJS)\n\t$(CC) -o $@ $(OBJS) -lm\n"
	return os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644)
}

// withRootfs mounts the merged rootfs read-only (kernel overlay) for fn.
func (b *bench) withRootfs(fn func(mnt string) error) error {
	mnt := b.path("prep", "mnt")
	if err := removeTree(b.path("prep")); err != nil {
		return err
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	m, err := b.mountAt(kernel, rootfsLayers, "", "", mnt, "")
	if err != nil {
		return err
	}
	err = fn(mnt)
	b.unmount(m)
	if err == nil {
		err = removeTree(b.path("prep"))
	}
	return err
}

// makeLists picks, from the merged rootfs, the 10k files that lstat and
// chmod use, 10k names that do not exist, and ~20k small files for the
// untar workload's tarball.
func (b *bench) makeLists() error {
	return b.withRootfs(func(mnt string) error {
		var files, small []string
		entries, usr := 0, 0
		err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == mnt {
				return err
			}
			rel := p[len(mnt)+1:]
			entries++
			if strings.HasPrefix(rel, "usr/") {
				usr++
			}
			if d.Type().IsRegular() {
				files = append(files, rel)
				if info, err := d.Info(); err == nil && info.Size() <= 256<<10 {
					small = append(small, rel)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		paths := pick(files, 10000)
		var missing []string
		for _, p := range paths {
			missing = append(missing, p+".missing")
		}
		tarred := withParents(pick(small, 10000)) // twice in the tarball: 20k files
		if err := writeLines(b.path("paths10k.txt"), paths); err != nil {
			return err
		}
		if err := writeLines(b.path("missing10k.txt"), missing); err != nil {
			return err
		}
		if err := writeLines(b.path("untar.list"), tarred); err != nil {
			return err
		}
		if err := b.prepSh(fmt.Sprintf(`rm -f untar.tar.tmp
for copy in 1 2; do tar -rf untar.tar.tmp -C %q --no-recursion --transform "s,^,$copy/," -T untar.list; done
mv untar.tar.tmp untar.tar`, mnt)); err != nil {
			return err
		}
		stats := fmt.Sprintf("rootfs: %d entries, %d regular files, %d entries under /usr; untar.tar: %d entries",
			entries, len(files), usr, 2*len(tarred))
		return os.WriteFile(b.path("stats.txt"), []byte(stats), 0o644)
	})
}

// makeRepo is a git repository (a copy of the rootfs's /usr/share and the
// python3 library) in a lower layer, its files dated before the index so
// git status trusts the index; the top layer changes 20 files and adds 10.
func (b *bench) makeRepo() error {
	two, one := b.path("repo/2.tmp"), b.path("repo/1.tmp")
	for _, d := range []string{two, one} {
		if err := removeTree(d); err != nil {
			return err
		}
	}
	err := b.withRootfs(func(mnt string) error {
		return b.prepSh(fmt.Sprintf(`r=%q/repo; mkdir -p "$r"
cp -a %q/usr/share %q/usr/lib/python3.11 "$r"/
find "$r" -exec touch -h -d 2024-01-01 {} +
cd "$r"; git init -q; git add -A; git -c user.name=ovlbench -c user.email=ovlbench@localhost commit -q -m data`,
			two, mnt, mnt))
	})
	if err != nil {
		return err
	}
	if err := b.prepSh(fmt.Sprintf(`cd %q/repo; mkdir -p %q/repo
git ls-files | awk 'NR %% 500 == 7' | head -20 | while IFS= read -r f; do
	mkdir -p "%s/repo/$(dirname "$f")"; cp -a "$f" "%s/repo/$f"; echo changed >>"%s/repo/$f"
done
for i in $(seq 1 10); do echo new >%q/repo/new-$i.txt; done`, two, one, one, one, one, one)); err != nil {
		return err
	}
	if err := os.Rename(two, b.path("repo/2")); err != nil {
		return err
	}
	return os.Rename(one, b.path("repo/1"))
}

// makeStack is 200 small layers, each adding a few files in directories
// that every layer and the rootfs share (/etc, /usr/lib, /usr/share/doc).
func (b *bench) makeStack() error {
	tmp := b.path("stack.tmp")
	if err := removeTree(tmp); err != nil {
		return err
	}
	for i := 1; i <= 200; i++ {
		n := fmt.Sprintf("%03d", i)
		for p, content := range map[string]string{
			"etc/stack-" + n + ".conf":             "layer " + n + "\n",
			"usr/lib/stack-" + n + "/lib.so":       strings.Repeat("x", 1024),
			"usr/share/doc/stack-" + n + "/README": "layer " + n + "\n",
			"var/lib/stack-" + n + "/state":        n + "\n",
		} {
			if err := writeFile(filepath.Join(tmp, n, p), []byte(content)); err != nil {
				return err
			}
		}
	}
	return os.Rename(tmp, b.path("stack"))
}

// makeBig is a 1 GiB file of pseudo-random bytes (not sparse, not zeros).
func (b *bench) makeBig() error {
	tmp := b.path("big.tmp")
	if err := removeTree(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "1"), 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(tmp, "1", "big"))
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{'o', 'v', 'l'})
	buf := make([]byte, 1<<20)
	for i := 0; i < 1024; i++ {
		rng.Read(buf)
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return os.Rename(tmp, b.path("big"))
}

// makeDir100k is one directory of 100,000 empty files spread over three
// layers (file i in layer i%3+1).
func (b *bench) makeDir100k() error {
	tmp := b.path("dir100k.tmp")
	if err := removeTree(tmp); err != nil {
		return err
	}
	for l := 1; l <= 3; l++ {
		if err := os.MkdirAll(filepath.Join(tmp, fmt.Sprint(l), "d"), 0o755); err != nil {
			return err
		}
	}
	for i := 0; i < 100000; i++ {
		p := filepath.Join(tmp, fmt.Sprint(i%3+1), "d", fmt.Sprintf("f%06d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return err
		}
	}
	return os.Rename(tmp, b.path("dir100k"))
}

// makeTree50k is a tree of 50,000 small files, 50 x 10 directories of 100
// files, every directory in all three layers and its files spread over them.
func (b *bench) makeTree50k() error {
	tmp := b.path("tree50k.tmp")
	if err := removeTree(tmp); err != nil {
		return err
	}
	content := []byte(strings.Repeat("tree\n", 20))
	for i := 0; i < 50000; i++ {
		p := filepath.Join(tmp, fmt.Sprint(i%3+1), "t", fmt.Sprintf("d%02d", i/1000), fmt.Sprintf("s%d", i/100%10), fmt.Sprintf("f%05d", i))
		if err := writeFile(p, content); err != nil {
			return err
		}
	}
	return os.Rename(tmp, b.path("tree50k"))
}

// pick takes n items spread evenly over l (all of l when it is shorter).
func pick(l []string, n int) []string {
	if len(l) <= n {
		return l
	}
	out := make([]string, n)
	for i := range out {
		out[i] = l[i*len(l)/n]
	}
	return out
}

// withParents adds the parent directories of the paths and sorts, so that
// tar -T lists every directory before what it holds.
func withParents(paths []string) []string {
	set := map[string]bool{}
	for _, p := range paths {
		set[p] = true
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			set[d] = true
		}
	}
	var out []string
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func writeLines(p string, lines []string) error {
	return os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func writeFile(p string, content []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, content, 0o644)
}

// removeTree unmounts whatever is mounted below p (a killed chroot step
// leaves /proc and /dev there) and removes p.
func removeTree(p string) error {
	under := mountsBelow(p)
	sort.Sort(sort.Reverse(sort.StringSlice(under)))
	for _, mp := range under {
		if err := unmountPath(mp); err != nil {
			return err
		}
	}
	return os.RemoveAll(p)
}

// mountsBelow lists the mount points at or below p.
func mountsBelow(p string) []string {
	var under []string
	for _, mp := range layout.MountPoints() {
		if strings.HasPrefix(mp, p+"/") || mp == p {
			under = append(under, mp)
		}
	}
	return under
}

func mountedBelow(p string) bool { return len(mountsBelow(p)) > 0 }

// aptMirror is the first Debian mirror (not the security one) that apt on
// this machine uses.
func aptMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			var uri string
			switch {
			case len(fields) >= 2 && fields[0] == "URIs:":
				uri = fields[1]
			case len(fields) >= 3 && fields[0] == "deb" && !strings.HasPrefix(fields[1], "["):
				uri = fields[1]
			}
			if uri != "" && !strings.Contains(uri, "security") {
				f.Close()
				return uri
			}
		}
		f.Close()
	}
	return "http://deb.debian.org/debian"
}

// codename is the host's Debian release (bookworm on Debian 12).
func codename() string {
	s, _ := os.ReadFile("/etc/os-release")
	for _, l := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok && v != "" {
			return strings.Trim(v, `"`)
		}
	}
	return "bookworm"
}
