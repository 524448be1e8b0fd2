package tests

// Mount options that change what lands on disk or how the mount behaves,
// side by side with the kernel overlay given the same options on the same
// layers: redirect_dir=, userxattr, uuid=, volatile, a mount point on a lower
// layer, remount, and one daemon per upper.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// optsLayers makes lower a/f, a/sub/g, c/h; pre, when set, runs on the
// layers (lower, upper, work) before the mount under test.
func optsLayers(t *testing.T, pre func(l, u, w string)) (l, u, w string) {
	l, u, w = wrLayers(t, func(l string) {
		mkdirs(t, filepath.Join(l, "a", "sub"))
		writeFile(t, filepath.Join(l, "a", "f"), []byte("f"), 0o644)
		writeFile(t, filepath.Join(l, "a", "sub", "g"), []byte("g"), 0o644)
		mkdirs(t, filepath.Join(l, "c"))
		writeFile(t, filepath.Join(l, "c", "h"), []byte("h"), 0o644)
	})
	if pre != nil {
		pre(l, u, w)
	}
	return
}

// listOrErr is a directory's sorted names, or the errno of reading it.
func listOrErr(p string) string {
	names, err := readdirNames(p)
	if err != nil {
		return errName(err)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// redirectedUpper renames lower dir a to b through a kernel overlay with
// redirect_dir=on, leaving an upper b with X(redirect)="a" (or "/a").
func redirectedUpper(t *testing.T) func(l, u, w string) {
	return func(l, u, w string) {
		m := mountKernel(t, []string{l}, u, w, "redirect_dir=on")
		wrMust(t, "rename a b", os.Rename(filepath.Join(m, "a"), filepath.Join(m, "b")))
		wrMust(t, "umount", unix.Unmount(m, 0))
	}
}

type redirectSeen struct {
	B, A, Rename, D, DRedirect, Mv string
}

func runRedirect(t *testing.T, u, mnt string) redirectSeen {
	var s redirectSeen
	s.B = listOrErr(filepath.Join(mnt, "b"))
	s.A = listOrErr(filepath.Join(mnt, "a"))
	s.Rename = errOK(os.Rename(filepath.Join(mnt, "c"), filepath.Join(mnt, "d")))
	s.D = listOrErr(filepath.Join(mnt, "d"))
	if _, err := getXattr(filepath.Join(u, "d"), "trusted.overlay.redirect"); err == nil {
		s.DRedirect = "yes"
	}
	// mv falls back to copy and delete on EXDEV, as with unionmount-testsuite --xdev.
	if s.Rename != "ok" {
		out, err := exec.Command("mv", filepath.Join(mnt, "c"), filepath.Join(mnt, "e")).CombinedOutput()
		s.Mv = errOK(err) + " " + strings.TrimSpace(string(out)) + " e=" + listOrErr(filepath.Join(mnt, "e")) + " c=" + listOrErr(filepath.Join(mnt, "c"))
	}
	return s
}

// TestRedirectDirModes: redirect_dir=on|follow|nofollow|off as the kernel
// overlay honours them, on a fresh upper and on one holding a redirect.
func TestRedirectDirModes(t *testing.T) {
	for _, mode := range []string{"on", "follow", "nofollow", "off"} {
		for _, pre := range []string{"fresh", "redirected"} {
			t.Run(mode+"/"+pre, func(t *testing.T) {
				var p func(l, u, w string)
				if pre == "redirected" {
					p = redirectedUpper(t)
				}
				opt := "redirect_dir=" + mode
				l, u, w := optsLayers(t, p)
				ov := runRedirect(t, u, mountOvlfs(t, []string{l}, u, w, opt))
				l, u, w = optsLayers(t, p)
				kern := runRedirect(t, u, mountKernel(t, []string{l}, u, w, opt))
				if ov != kern {
					t.Errorf("%s on a %s upper:\n ovlfs  %+v\n kernel %+v", opt, pre, ov, kern)
				}
			})
		}
	}
}

// upperMeta lists every overlay xattr in an upper (path: names), and the
// whiteouts, for comparing what two mounts wrote.
func upperMeta(t *testing.T, u string) []string {
	var out []string
	filepath.Walk(u, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(u, p)
		names, _ := listXattrs(p, func(n string) bool { return strings.Contains(n, ".overlay.") })
		sort.Strings(names)
		if len(names) > 0 {
			out = append(out, rel+": "+strings.Join(names, " "))
		}
		if wrIsWhiteout(p) {
			out = append(out, rel+": whiteout")
		}
		return nil
	})
	return out
}

// TestUserxattrAsRoot: -o userxattr as root writes user.overlay.* (never
// trusted.overlay.*), and a kernel mount with userxattr of that upper shows
// the same tree.
func TestUserxattrAsRoot(t *testing.T) {
	l, u, w := optsLayers(t, nil)
	m := mountOvlfs(t, []string{l}, u, w, "userxattr")
	wrMust(t, "rm a/f", os.Remove(filepath.Join(m, "a", "f")))
	wrMust(t, "rm -r c", os.RemoveAll(filepath.Join(m, "c")))
	wrMust(t, "mkdir c", os.Mkdir(filepath.Join(m, "c"), 0o755))
	wrMust(t, "chmod a", os.Chmod(filepath.Join(m, "a"), 0o700))
	want := snapshot(t, m)
	unmountFuse(t, m)
	meta := strings.Join(upperMeta(t, u), "\n")
	if strings.Contains(meta, "trusted.") || !strings.Contains(meta, "user.overlay.opaque") {
		t.Errorf("upper metadata with -o userxattr:\n%s\nwant user.overlay.* only, with an opaque c", meta)
	}
	k := mountKernel(t, []string{l}, u, w, "userxattr")
	requireSameTree(t, "kernel userxattr mount of the ovlfs upper", snapshot(t, k), want)
}

// TestUUIDOption: uuid= writes X(uuid) on the upper root where the kernel
// does, and nothing where it does not.
func TestUUIDOption(t *testing.T) {
	for _, mode := range []string{"", "on", "auto", "null", "off"} {
		t.Run("uuid="+mode, func(t *testing.T) {
			var opts []string
			if mode != "" {
				opts = []string{"uuid=" + mode}
			}
			seen := func(mount func(l, u, w string) string) string {
				l, u, w := optsLayers(t, nil)
				m := mount(l, u, w)
				wrMust(t, "append", os.WriteFile(filepath.Join(m, "a", "f"), []byte("more"), 0o644))
				v, err := getXattr(u, "trusted.overlay.uuid")
				if err != nil {
					return errName(err)
				}
				return "len " + string(rune('0'+len(v)/10)) + string(rune('0'+len(v)%10))
			}
			ov := seen(func(l, u, w string) string { return mountOvlfs(t, []string{l}, u, w, opts...) })
			kern := seen(func(l, u, w string) string { return mountKernel(t, []string{l}, u, w, opts...) })
			if ov != kern {
				t.Errorf("X(uuid) on the upper root: ovlfs %s, kernel %s", ov, kern)
			}
		})
	}
}

// TestVolatileMarker: both directions. A kernel volatile mount leaves
// work/work/incompat/volatile, and ovlfs then refuses the layers as the
// kernel does; ovlfs -o volatile leaves the same mark, which the kernel
// then refuses.
func TestVolatileMarker(t *testing.T) {
	l, u, w := optsLayers(t, nil)
	k := mountKernel(t, []string{l}, u, w, "volatile")
	wrMust(t, "write", os.WriteFile(filepath.Join(k, "new"), []byte("x"), 0o644))
	wrMust(t, "umount", unix.Unmount(k, 0))
	out, err := exec.Command(ovlfsBin, "-o", layerOptions([]string{l}, u, w), newMountpoint(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "incompat feature \"volatile\"") {
		t.Errorf("ovlfs on a work dir the kernel marked volatile: %v %q; want a refusal naming the volatile mark", err, out)
	}

	l, u, w = optsLayers(t, nil)
	m := mountOvlfs(t, []string{l}, u, w, "volatile")
	wrMust(t, "write", os.WriteFile(filepath.Join(m, "new"), []byte("x"), 0o644))
	unmountFuse(t, m)
	if _, err := os.Lstat(filepath.Join(w, "work", "incompat", "volatile", "dirty")); err != nil {
		t.Errorf("after ovlfs -o volatile: %v; want work/work/incompat/volatile/dirty as the kernel writes", err)
	}
	km := newMountpoint(t)
	if err := unix.Mount("overlay", km, "overlay", 0, layerOptions([]string{l}, u, w)); err == nil {
		unix.Unmount(km, 0)
		t.Errorf("the kernel mounted layers ovlfs used with -o volatile; want it refused as after its own volatile mount")
	}
	out, err = exec.Command(ovlfsBin, "-o", layerOptions([]string{l}, u, w)+",volatile", newMountpoint(t)).CombinedOutput()
	if err == nil {
		t.Errorf("ovlfs -o volatile mounted over its own volatile mark (%q); the kernel refuses that too", out)
	}
}

// TestMountOnLowerDir: an overlay mounted on its own lower dir ("in place"),
// as the kernel and fuse-overlayfs allow.
func TestMountOnLowerDir(t *testing.T) {
	show := func(mount func(l, u, w string) string) string {
		l, u, w := optsLayers(t, nil)
		m := mount(l, u, w)
		wrMust(t, "write", os.WriteFile(filepath.Join(m, "a", "f"), []byte("changed"), 0o644))
		b, err := os.ReadFile(filepath.Join(l, "a", "f")) // the mount's view of l
		data, _ := os.ReadFile(filepath.Join(u, "a", "f"))
		return listOrErr(m) + " " + listOrErr(filepath.Join(m, "a")) + " " + string(b) + errOK(err) + " upper:" + string(data)
	}
	kern := show(func(l, u, w string) string {
		wrMust(t, "mount", unix.Mount("overlay", l, "overlay", 0, layerOptions([]string{l}, u, w)))
		t.Cleanup(func() { unix.Unmount(l, unix.MNT_DETACH) })
		return l
	})
	ov := show(func(l, u, w string) string {
		out, err := exec.Command(ovlfsBin, "-o", layerOptions([]string{l}, u, w), l).CombinedOutput()
		if err != nil {
			t.Fatalf("ovlfs mounted on its lower dir: %v %s", err, out)
		}
		t.Cleanup(func() { unmountFuse(t, l) })
		return l
	})
	if ov != kern {
		t.Errorf("in-place overlay: ovlfs %q, kernel %q", ov, kern)
	}
}

// TestRemountReadOnly: `mount -o remount,ro` reaches ovlfs through
// mount.fuse3 as `ovlfs SOURCE MNT -o remount,ro`: the live mount turns
// read-only, as a kernel overlay does, and no second daemon starts.
func TestRemountReadOnly(t *testing.T) {
	l, u, w := optsLayers(t, nil)
	m := mountOvlfs(t, []string{l}, u, w)
	before := daemonPids(m)
	out, err := exec.Command(ovlfsBin, "ovlfs", m, "-o", "remount,ro").CombinedOutput()
	if err != nil {
		t.Fatalf("ovlfs -o remount,ro: %v %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(m, "new"), []byte("x"), 0o644); !isErrno(err, unix.EROFS) {
		t.Errorf("write after remount,ro: %v; want EROFS", err)
	}
	if after := daemonPids(m); len(after) != len(before) {
		t.Errorf("daemons serving %s: %v before the remount, %v after", m, before, after)
	}
	if out, err := exec.Command(ovlfsBin, "ovlfs", m, "-o", "remount,rw").CombinedOutput(); err != nil {
		t.Fatalf("ovlfs -o remount,rw: %v %s", err, out)
	}
	wrMust(t, "write after remount,rw", os.WriteFile(filepath.Join(m, "new"), []byte("x"), 0o644))
	if out, err := exec.Command(ovlfsBin, "ovlfs", l, "-o", "remount,ro").CombinedOutput(); err == nil {
		t.Errorf("remount of a directory that is no ovlfs mount succeeded: %s", out)
	}
}

// TestSecondDaemonRefused: a second mount of the same upper and work dir is
// refused with one line; the first mount is untouched.
func TestSecondDaemonRefused(t *testing.T) {
	l, u, w := optsLayers(t, nil)
	m := mountOvlfs(t, []string{l}, u, w)
	wrMust(t, "write", os.WriteFile(filepath.Join(m, "kept"), []byte("x"), 0o644))
	out, err := exec.Command(ovlfsBin, "-o", layerOptions([]string{l}, u, w), newMountpoint(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another ovlfs mount") || bytes.Count(out, []byte("\n")) != 1 {
		t.Errorf("second mount of the same upper/work: %v %q; want one line saying it is in use", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(m, "kept")); err != nil || string(b) != "x" {
		t.Errorf("the first mount after the refused second one: %q %v", b, err)
	}
}

func isErrno(err error, want unix.Errno) bool {
	var e unix.Errno
	for err != nil {
		if x, ok := err.(unix.Errno); ok {
			e = x
			break
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			break
		}
		err = u.Unwrap()
	}
	return e == want
}

// asUserErr runs script as the unprivileged user and returns its output
// and error, for commands that must fail.
func asUserErr(dir, script string) (string, error) {
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestRootlessRefusals: as an ordinary user, an upper the user cannot write
// is refused at mount (not accepted and then EACCES on every write), and a
// mount fusermount3 refuses says fusermount3's own reason, on one line.
func TestRootlessRefusals(t *testing.T) {
	dir, bin := rootlessSetup(t)
	ro := filepath.Join(dir, "rootupper")
	mkdirs(t, ro) // owned by root, 0755
	noWrite := filepath.Join(dir, "rootmnt")
	mkdirs(t, noWrite)
	cases := []struct{ name, args, want string }{
		{"root-owned upper", "-o lowerdir=l,upperdir=rootupper,workdir=w m", "upperdir " + ro + ": not writable"},
		{"mount point not writable", "-o lowerdir=l,upperdir=u,workdir=w rootmnt", "fusermount3: user has no write access to mountpoint " + noWrite},
		{"strictatime", "-o lowerdir=l,upperdir=u,workdir=w,strictatime m", "option strictatime: the daemon cannot make a private strictatime mount"},
	}
	for _, c := range cases {
		out, err := asUserErr(dir, bin+" "+c.args)
		if err == nil {
			asUserErr(dir, "fusermount3 -u m; fusermount3 -u rootmnt")
			t.Errorf("%s: mounted; want a refusal", c.name)
			continue
		}
		if !strings.Contains(out, c.want) || strings.Count(out, "\n") != 1 || strings.Contains(out, `\n`) || strings.Contains(out, "exited with code") {
			t.Errorf("%s: %q; want one line containing %q", c.name, out, c.want)
		}
	}
	// The same layers mounted again: refused (one daemon per work dir).
	asUser(t, dir, bin+" -o lowerdir=l,upperdir=u,workdir=w m")
	defer asUserErr(dir, "fusermount3 -u m")
	if out, err := asUserErr(dir, bin+" -o lowerdir=l,upperdir=u,workdir=w m"); err == nil || strings.Count(out, "\n") != 1 {
		t.Errorf("a second mount of the same layers: %v %q; want one line", err, out)
	}
}

// TestAtimeOptions: noatime, nodiratime and relatime (the default) move the
// atime of files and directories read through the mount as on the kernel
// overlay with the same option.
func TestAtimeOptions(t *testing.T) {
	old := time.Unix(1000000000, 0)
	for _, opt := range []string{"", "relatime", "noatime", "nodiratime"} {
		t.Run("opt="+opt, func(t *testing.T) {
			var opts []string
			if opt != "" {
				opts = []string{opt}
			}
			seen := func(mount func(l, u, w string) string) string {
				l, u, w := optsLayers(t, nil)
				m := mount(l, u, w)
				wrMust(t, "write", os.WriteFile(filepath.Join(m, "n"), []byte("new file"), 0o644))
				wrMust(t, "mkdir", os.Mkdir(filepath.Join(m, "dd"), 0o755))
				wrMust(t, "write", os.WriteFile(filepath.Join(m, "dd", "x"), []byte("x"), 0o644))
				for _, p := range []string{"n", "dd", "a/sub"} {
					wrMust(t, "chtimes", os.Chtimes(filepath.Join(m, p), old, old.Add(time.Hour)))
				}
				if _, err := os.ReadFile(filepath.Join(m, "n")); err != nil {
					t.Fatal(err)
				}
				readdirNames(filepath.Join(m, "dd"))
				readdirNames(filepath.Join(m, "a", "sub"))
				var out []string
				for _, p := range []string{"n", "dd", "a/sub"} {
					var st unix.Stat_t
					wrMust(t, "stat", unix.Stat(filepath.Join(m, p), &st))
					moved := "kept"
					if st.Atim.Sec > old.Add(time.Hour).Unix() {
						moved = "moved"
					}
					out = append(out, p+" "+moved)
				}
				return strings.Join(out, ", ")
			}
			ov := seen(func(l, u, w string) string { return mountOvlfs(t, []string{l}, u, w, opts...) })
			kern := seen(func(l, u, w string) string {
				m := newMountpoint(t)
				flags := map[string]uintptr{"": 0, "relatime": unix.MS_RELATIME, "noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME}[opt]
				wrMust(t, "mount overlay", unix.Mount("overlay", m, "overlay", flags, layerOptions([]string{l}, u, w)))
				t.Cleanup(func() { unix.Unmount(m, unix.MNT_DETACH) })
				return m
			})
			if ov != kern {
				t.Errorf("atime after reads with %q: ovlfs %s; kernel %s", opt, ov, kern)
			}
		})
	}
}

// TestRootlessCopyUpModes: as an ordinary user through fusermount3, changing
// a lower file the user owns copies it up whatever its mode, and the change
// then succeeds or fails as on a plain directory (the kernel overlay in a
// user namespace gives the plain directory's answer too): chmod, touch and
// truncate by the owner of a 0444 file work; setfattr user.* needs write
// permission.
func TestRootlessCopyUpModes(t *testing.T) {
	dir, bin := rootlessSetup(t)
	// Not 0000 or 0200: a daemon with the user's own rights cannot read
	// such a file to copy it (a README limit; in a user namespace it can).
	modes := []uint32{0o400, 0o444, 0o500, 0o555, 0o600, 0o644, 0o755}
	ops := [][2]string{
		{"chmod", "chmod 406 $f"},
		{"touch", "touch -d @1000000000 $f"},
		{"setfattr", "setfattr -n user.x -v 1 $f"},
		{"write", "echo x >> $f"},
	}
	plain := filepath.Join(dir, "plain")
	mkdirs(t, plain)
	var script strings.Builder
	for _, m := range modes {
		for _, o := range ops {
			op := o[0]
			name := fmt.Sprintf("f%04o-%s", m, op)
			for _, d := range []string{filepath.Join(dir, "l"), plain} {
				writeFile(t, filepath.Join(d, name), []byte("data\n"), 0o644)
				chown(t, filepath.Join(d, name), 65534, 65534)
				chmod(t, filepath.Join(d, name), m)
			}
			fmt.Fprintf(&script, "f=$D/%s; if (%s) 2>/dev/null; then echo %s ok; else echo %s fail; fi\n", name, o[1], name, name)
		}
	}
	chown(t, plain, 65534, 65534)
	asUser(t, dir, bin+" -o lowerdir=l,upperdir=u,workdir=w m")
	defer asUserErr(dir, "fusermount3 -u m")
	onPlain := asUser(t, dir, "D="+plain+"\n"+script.String())
	onOvlfs := asUser(t, dir, "D=m\n"+script.String())
	if onOvlfs != onPlain {
		t.Errorf("as an ordinary user, ovlfs:\n%s\na plain directory:\n%s", onOvlfs, onPlain)
	}
}

// TestStrictAtime: with strictatime every read of a file in a new open moves
// its atime, where relatime leaves an atime newer than the mtime alone
// (xfstests generic/003); a read-only strictatime mount moves none.
func TestStrictAtime(t *testing.T) {
	for _, opts := range [][]string{{"strictatime"}, {"relatime"}, {"ro", "strictatime"}} {
		t.Run(strings.Join(opts, ","), func(t *testing.T) {
			seen := func(mount func(l, u, w string) string) string {
				l, u, w := optsLayers(t, nil)
				writeFile(t, filepath.Join(u, "f"), []byte("upper file"), 0o644)
				now := time.Now()
				wrMust(t, "chtimes", os.Chtimes(filepath.Join(u, "f"), now.Add(-time.Minute), now.Add(-2*time.Minute)))
				m := mount(l, u, w)
				var out []string
				for i := range 2 {
					var a, b unix.Stat_t
					wrMust(t, "stat", unix.Stat(filepath.Join(m, "f"), &a))
					time.Sleep(20 * time.Millisecond)
					if _, err := os.ReadFile(filepath.Join(m, "f")); err != nil {
						t.Fatal(err)
					}
					wrMust(t, "stat", unix.Stat(filepath.Join(m, "f"), &b))
					out = append(out, fmt.Sprintf("read %d: atime moved %v", i+1, a.Atim != b.Atim))
				}
				return strings.Join(out, ", ")
			}
			ov := seen(func(l, u, w string) string { return mountOvlfs(t, []string{l}, u, w, opts...) })
			kern := seen(func(l, u, w string) string {
				m := newMountpoint(t)
				var flags uintptr
				for _, o := range opts {
					flags |= map[string]uintptr{"strictatime": unix.MS_STRICTATIME, "relatime": unix.MS_RELATIME, "ro": unix.MS_RDONLY}[o]
				}
				wrMust(t, "mount overlay", unix.Mount("overlay", m, "overlay", flags, layerOptions([]string{l}, u, w)))
				t.Cleanup(func() { unix.Unmount(m, unix.MNT_DETACH) })
				return m
			})
			if ov != kern {
				t.Errorf("%v: ovlfs %s; kernel %s", opts, ov, kern)
			}
		})
	}
}
