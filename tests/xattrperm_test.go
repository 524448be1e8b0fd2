package tests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The override xattrs of xattr_permissions=1 and =2, and the one
// containers/storage writes.
const (
	ovrPriv       = "security.fuseoverlayfs.override_stat"
	ovrUser       = "user.fuseoverlayfs.override_stat"
	ovrContainers = "user.containers.override_stat"
)

func overrideName(mode int) string {
	if mode == 1 {
		return ovrPriv
	}
	return ovrUser
}

// shownStat is "UID:GID PERM" of p (no symlink following), as a client sees it.
func shownStat(t *testing.T, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return fmt.Sprintf("%d:%d %o", st.Uid, st.Gid, st.Mode&0o7777)
}

func wantShown(t *testing.T, p, want string) {
	t.Helper()
	if got := shownStat(t, p); got != want {
		t.Errorf("%s: shows %s, want %s", p, got, want)
	}
}

// wantOverride checks the override xattr name of the on-disk file p.
func wantOverride(t *testing.T, p, name, want string) {
	t.Helper()
	v, err := getXattr(p, name)
	if err != nil || string(v) != want {
		t.Errorf("%s on disk: %s = %q (%v), want %q", p, name, v, err, want)
	}
}

// xpLayers makes a lower layer that keeps owners in the override xattr name
// (its root carries one): f "1:2:640" (really 0:0 644), d "3:4:700", plain
// without an override; an empty upper and work.
func xpLayers(t *testing.T, name string) (lower, upper, work string) {
	t.Helper()
	dir := t.TempDir()
	lower, upper, work = filepath.Join(dir, "l"), filepath.Join(dir, "u"), filepath.Join(dir, "w")
	for _, d := range []string{lower, upper, work, lower + "/d"} {
		mkdirMode(t, d, 0o755)
	}
	writeFile(t, lower+"/f", []byte("lower f\n"), 0o644)
	writeFile(t, lower+"/plain", []byte("plain\n"), 0o644)
	writeFile(t, lower+"/d/x", []byte("x\n"), 0o644)
	setXattr(t, lower, name, []byte("0:0:755"))
	setXattr(t, lower+"/f", name, []byte("1:2:640"))
	setXattr(t, lower+"/d", name, []byte("3:4:700"))
	setXattr(t, lower+"/d/x", name, []byte("3:4:100600")) // st_mode whole, as fuse-overlayfs writes after chmod
	return lower, upper, work
}

// openToAll lets every user walk down to p: t.TempDir() makes 0700 dirs.
func openToAll(t *testing.T, p string) {
	t.Helper()
	for d := filepath.Dir(p); strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// asUID runs a shell script as uid:gid (root's mount serves every user).
func asUID(t *testing.T, uid int, script string) {
	t.Helper()
	cmd := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", "--", "sh", "-ec", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid %d: %s: %v\n%s", uid, script, err, out)
	}
}

// TestXattrPerm: with xattr_permissions=1 and =2 the upper keeps owner and
// mode in the option's xattr: creates record the creator and the mode asked
// for, chmod and chown change only the xattr, copy-up carries what the lower
// showed, the real owner stays the daemon's, and clients can neither see nor
// forge the xattr.
func TestXattrPerm(t *testing.T) {
	for _, mode := range []int{1, 2} {
		t.Run(fmt.Sprint("xattr_permissions=", mode), func(t *testing.T) {
			name := overrideName(mode)
			lower, upper, work := xpLayers(t, name)
			opt := fmt.Sprint("xattr_permissions=", mode)
			mnt := mountOvlfs(t, []string{lower}, upper, work, opt)

			// A lower layer whose root has the override shows it.
			wantShown(t, mnt+"/f", "1:2 640")
			wantShown(t, mnt+"/d", "3:4 700")
			wantShown(t, mnt+"/d/x", "3:4 600")
			wantShown(t, mnt+"/plain", "0:0 644") // no override: the real owner and mode
			// The upper root got the lower root's override at mount time.
			wantOverride(t, upper, name, "0:0:755")

			// chmod and chown through the mount: only the xattr changes.
			openToAll(t, mnt)
			chmod(t, mnt, 0o777)
			chmod(t, mnt+"/f", 0o600) // copies f up, with the lower's owner
			chown(t, mnt+"/d", 7, 8)
			wantShown(t, mnt+"/f", "1:2 600")
			wantShown(t, mnt+"/d", "7:8 700")
			wantShown(t, mnt, "0:0 777")
			wantOverride(t, upper+"/f", name, "1:2:600")
			wantOverride(t, upper+"/d", name, "7:8:700")
			wantOverride(t, upper, name, "0:0:777")
			wantShown(t, upper+"/f", "0:0 600") // the daemon owns it for real

			// Creates record the creator and the mode asked for (umask applied).
			asUID(t, 1000, "umask 027; echo hi > "+mnt+"/byuser; mkdir "+mnt+"/duser; mkdir -m 2770 "+mnt+"/sgid")
			chown(t, mnt+"/sgid", 1000, 50)
			asUID(t, 1000, "umask 022; touch "+mnt+"/sgid/in; mkdir "+mnt+"/sgid/sub")
			wantShown(t, mnt+"/byuser", "1000:1000 640")
			wantShown(t, mnt+"/duser", "1000:1000 750")
			wantShown(t, mnt+"/sgid", "1000:50 2770")
			wantShown(t, mnt+"/sgid/sub", "1000:50 2755") // a setgid parent passes on its group and bit
			wantOverride(t, upper+"/byuser", name, "1000:1000:640")
			wantOverride(t, upper+"/duser", name, "1000:1000:750")
			wantOverride(t, upper+"/sgid/in", name, "1000:50:644")
			wantShown(t, upper+"/byuser", "0:0 640")
			wantShown(t, upper+"/sgid", "0:0 770") // setgid is not kept for real: it would be the daemon's
			chown(t, mnt+"/byuser", 5, 6)
			wantShown(t, mnt+"/byuser", "5:6 640")
			wantOverride(t, upper+"/byuser", name, "5:6:640")
			// The mode in the xattr is what the kernel enforces.
			if err := exec.Command("setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "--", "cat", mnt+"/byuser").Run(); err == nil {
				t.Errorf("uid 1000 read byuser (shown 5:6 640)")
			}

			// Clients can neither read, list, set nor remove any override.
			for _, p := range []string{mnt + "/f", mnt + "/byuser", mnt} {
				for _, n := range []string{ovrPriv, ovrUser, ovrContainers} {
					if _, err := getXattr(p, n); !errors.Is(err, unix.ENODATA) {
						t.Errorf("getxattr %s %s: %v, want ENODATA", p, n, err)
					}
					if err := unix.Lsetxattr(p, n, []byte("0:0:4777"), 0); !errors.Is(err, unix.EPERM) {
						t.Errorf("setxattr %s %s: %v, want EPERM", p, n, err)
					}
					if err := unix.Lremovexattr(p, n); !errors.Is(err, unix.ENODATA) {
						t.Errorf("removexattr %s %s: %v, want ENODATA", p, n, err)
					}
				}
				names, err := listXattrs(p, func(string) bool { return true })
				if err != nil {
					t.Fatal(err)
				}
				for _, n := range names {
					if strings.Contains(n, "override_stat") {
						t.Errorf("listxattr %s shows %s", p, n)
					}
				}
			}
			wantOverride(t, upper+"/byuser", name, "5:6:640")

			// A remount shows the same.
			unmountFuse(t, mnt)
			mnt = mountOvlfs(t, []string{lower}, upper, work, opt)
			wantShown(t, mnt+"/f", "1:2 600")
			wantShown(t, mnt+"/byuser", "5:6 640")
			wantShown(t, mnt+"/sgid/sub", "1000:50 2755")
		})
	}
}

// TestXattrPermOff: without the option the upper is not in override mode:
// chmod and chown are real, and a copy-up makes real what the lower showed.
// A lower without an override on its root is read as it is.
func TestXattrPermOff(t *testing.T) {
	lower, upper, work := xpLayers(t, ovrUser)
	other := t.TempDir()
	writeFile(t, other+"/g", []byte("g\n"), 0o644)
	setXattr(t, other+"/g", ovrUser, []byte("1:2:600")) // root has none: ignored
	mnt := mountOvlfs(t, []string{lower, other}, upper, work)
	wantShown(t, mnt+"/f", "1:2 640")
	wantShown(t, mnt+"/g", "0:0 644")
	chmod(t, mnt+"/f", 0o604)
	wantShown(t, mnt+"/f", "1:2 604")
	wantShown(t, upper+"/f", "1:2 604")
	if _, err := getXattr(upper+"/f", ovrUser); !errors.Is(err, unix.ENODATA) {
		t.Errorf("copy-up without the option kept the override: %v", err)
	}
	if _, err := getXattr(upper, ovrUser); !errors.Is(err, unix.ENODATA) {
		t.Errorf("the upper root got an override without the option: %v", err)
	}
}

// TestXattrPermIDMap: the xattr holds on-disk IDs, as fuse-overlayfs keeps
// them: uidmapping= shifts them like real owners.
func TestXattrPermIDMap(t *testing.T) {
	lower, upper, work := xpLayers(t, ovrUser)
	mnt := mountOvlfs(t, []string{lower}, upper, work, "xattr_permissions=2",
		"uidmapping=0:100000:65536", "gidmapping=0:100000:65536")
	wantShown(t, mnt+"/f", "100001:100002 640")
	chown(t, mnt+"/f", 100005, 100006)
	wantShown(t, mnt+"/f", "100005:100006 640")
	wantOverride(t, upper+"/f", ovrUser, "5:6:640")
	writeFile(t, mnt+"/new", nil, 0o600) // by root: on-disk 0 shows as 100000, unmapped 0 as overflow
	wantOverride(t, upper+"/new", ovrUser, "65534:65534:600")
}

// TestXattrPermBadValue: a malformed override answers EIO, never the real
// (wider) mode.
func TestXattrPermBadValue(t *testing.T) {
	lower, upper, work := xpLayers(t, ovrUser)
	setXattr(t, lower+"/plain", ovrUser, []byte("root:0:777"))
	mnt := mountOvlfs(t, []string{lower}, upper, work, "xattr_permissions=2")
	var st unix.Stat_t
	if err := unix.Lstat(mnt+"/plain", &st); !errors.Is(err, unix.EIO) {
		t.Errorf("lstat of a malformed override: %v, want EIO", err)
	}
	wantShown(t, mnt+"/f", "1:2 640")
}

// requireFuseOverlayfs skips without fuse-overlayfs.
func requireFuseOverlayfs(t *testing.T) string {
	t.Helper()
	requireMount(t)
	p, err := exec.LookPath("fuse-overlayfs")
	if err != nil {
		t.Skip("SKIP: fuse-overlayfs is not installed (apt-get install fuse-overlayfs)")
	}
	return p
}

// mountFuseOverlayfs mounts fuse-overlayfs with opts; undone in t.Cleanup.
func mountFuseOverlayfs(t *testing.T, bin, opts string) string {
	t.Helper()
	mnt := newMountpoint(t)
	if out, err := exec.Command(bin, "-o", opts, mnt).CombinedOutput(); err != nil {
		t.Fatalf("fuse-overlayfs -o %s: %v\n%s", opts, err, out)
	}
	t.Cleanup(func() { unmountFuse(t, mnt) })
	return mnt
}

// shownTree lists "path UID:GID PERM" of every entry below root.
func shownTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel+" "+shownStat(t, p))
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	sort.Strings(out)
	return out
}

// TestXattrPermFuseOverlayfs: an upper written by ovlfs with
// xattr_permissions=N, stacked as a lower, shows the same owners and modes
// through fuse-overlayfs as through ovlfs, and the other way round.
func TestXattrPermFuseOverlayfs(t *testing.T) {
	fo := requireFuseOverlayfs(t)
	ops := func(t *testing.T, mnt string, symlinks bool) {
		chmod(t, mnt, 0o775)
		chmod(t, mnt+"/f", 0o600)
		chown(t, mnt+"/d", 7, 8)
		writeFile(t, mnt+"/new", []byte("new\n"), 0o644)
		chown(t, mnt+"/new", 5, 6)
		chmod(t, mnt+"/new", 0o640)
		mkdirMode(t, mnt+"/nd", 0o755)
		chmod(t, mnt+"/nd", 0o710)
		chown(t, mnt+"/nd", 9, 10)
		if symlinks {
			symlink(t, "new", mnt+"/sym")
		}
	}
	for _, mode := range []int{1, 2} {
		opt := fmt.Sprint("xattr_permissions=", mode)
		t.Run(opt, func(t *testing.T) {
			name := overrideName(mode)
			for _, writer := range []string{"ovlfs", "fuse-overlayfs"} {
				lower, upper, work := xpLayers(t, name)
				// Every regular file and directory of an override layer needs
				// an override for fuse-overlayfs 1.10 (ENODATA otherwise).
				setXattr(t, lower+"/plain", name, []byte("0:0:644"))
				var mnt string
				if writer == "ovlfs" {
					mnt = mountOvlfs(t, []string{lower}, upper, work, opt)
				} else {
					mnt = mountFuseOverlayfs(t, fo, layerOptions([]string{lower}, upper, work)+","+opt)
				}
				// fuse-overlayfs 1.10 fails symlink(2) with ENOMEM when
				// xattr_permissions=1 (it sets the xattr on the /proc magic link).
				ops(t, mnt, writer == "ovlfs" || mode == 2)
				written := shownTree(t, mnt)
				unmountFuse(t, mnt)
				// The written upper as a lower, read by both.
				byOvlfs := shownTree(t, mountOvlfs(t, []string{upper, lower}, "", ""))
				byFO := shownTree(t, mountFuseOverlayfs(t, fo, layerOptions([]string{upper, lower}, "", "")))
				if strings.Join(byOvlfs, "\n") != strings.Join(byFO, "\n") {
					t.Errorf("upper written by %s: ovlfs and fuse-overlayfs differ\novlfs:\n%s\nfuse-overlayfs:\n%s",
						writer, strings.Join(byOvlfs, "\n"), strings.Join(byFO, "\n"))
				}
				if strings.Join(byOvlfs, "\n") != strings.Join(written, "\n") {
					t.Errorf("upper written by %s: read back differs from what it showed\nwritten:\n%s\nread:\n%s",
						writer, strings.Join(written, "\n"), strings.Join(byOvlfs, "\n"))
				}
			}
		})
	}
}

// TestXattrPermRootlessUserns: as root of a user namespace of an ordinary
// user (rootless Podman), xattr_permissions=2 shows the owners and modes a
// lower keeps in user.fuseoverlayfs.override_stat and records creates and
// chmods there.
func TestXattrPermRootlessUserns(t *testing.T) {
	dir, bin := rootlessSetup(t)
	if out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		"unshare", "-Urm", "true").CombinedOutput(); err != nil {
		t.Skipf("SKIP: ordinary users cannot make user namespaces here: %v %s", err, out)
	}
	setXattr(t, dir+"/l", ovrUser, []byte("0:0:755"))
	setXattr(t, dir+"/l/f", ovrUser, []byte("0:0:4711"))
	out := asUser(t, dir, "unshare -Urm sh -ec '"+bin+" -o lowerdir=l,upperdir=u,workdir=w,xattr_permissions=2 m\n"+
		"trap \"umount m\" EXIT\n"+
		"stat -c \"%n %a\" m/f m/d\n"+
		"chmod 640 m/f\n"+
		"umask 022; echo new > m/new; mkdir -m 700 m/nd\n"+
		"stat -c \"%n %a\" m/f m/new m/nd'")
	want := "m/f 4711\nm/d 755\nm/f 640\nm/new 644\nm/nd 700\n"
	if out != want {
		t.Errorf("through the mount:\n%s\nwant:\n%s", out, want)
	}
	wantOverride(t, dir+"/u/f", ovrUser, "0:0:640")
	wantOverride(t, dir+"/u/new", ovrUser, "0:0:644")
	wantOverride(t, dir+"/u/nd", ovrUser, "0:0:700")
	wantShown(t, dir+"/u/nd", "65534:65534 700")
	if isMounted(dir + "/m") {
		t.Errorf("%s/m is still mounted", dir)
	}
}
