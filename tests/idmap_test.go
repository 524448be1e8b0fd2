package tests

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// idLayers makes a lower with files owned by 0, 1000 and 5000 (unmapped below),
// an empty upper and work.
func idLayers(t *testing.T) (lower, upper, work string) {
	t.Helper()
	dir := t.TempDir()
	lower, upper, work = filepath.Join(dir, "l"), filepath.Join(dir, "u"), filepath.Join(dir, "w")
	for _, d := range []string{lower, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, id := range map[string]int{"root": 0, "user": 1000, "other": 5000} {
		p := filepath.Join(lower, name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, id, id); err != nil {
			t.Fatal(err)
		}
	}
	return lower, upper, work
}

func owner(t *testing.T, p string) (uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

func wantOwner(t *testing.T, p string, uid, gid uint32) {
	t.Helper()
	if u, g := owner(t, p); u != uid || g != gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", p, u, g, uid, gid)
	}
}

// TestIDMapping: uidmapping/gidmapping as fuse-overlayfs reads them ("A:B:N":
// on-disk A.. show as B..), with containers/storage's leading ':' and several
// ranges; unmapped IDs show as the overflow ID; creates and chowns through the
// mount land on disk mapped back.
func TestIDMapping(t *testing.T) {
	lower, upper, work := idLayers(t)
	mnt := mountOvlfs(t, []string{lower}, upper, work,
		"uidmapping=:0:100000:1000:1000:200000:10", "gidmapping=0:100000:1000:1000:200000:10")
	wantOwner(t, filepath.Join(mnt, "root"), 100000, 100000)
	wantOwner(t, filepath.Join(mnt, "user"), 200000, 200000)
	wantOwner(t, filepath.Join(mnt, "other"), 65534, 65534) // outside every range

	// The test runs as root (view ID 0, unmapped): a create lands as the
	// overflow ID, as with fuse-overlayfs; a chown to view IDs lands mapped back.
	p := filepath.Join(mnt, "new")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantOwner(t, filepath.Join(upper, "new"), 65534, 65534)
	if err := os.Lchown(p, 100005, 200003); err != nil {
		t.Fatal(err)
	}
	wantOwner(t, p, 100005, 200003)
	wantOwner(t, filepath.Join(upper, "new"), 5, 1003)
	// Copy-up keeps the on-disk owner.
	if err := os.WriteFile(filepath.Join(mnt, "user"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantOwner(t, filepath.Join(upper, "user"), 1000, 1000)
	wantOwner(t, filepath.Join(mnt, "user"), 200000, 200000)
}

// TestIDSquash: squash_to_root shows every file as root; squash_to_uid and
// squash_to_gid win over it; the disk keeps the real owners.
func TestIDSquash(t *testing.T) {
	lower, upper, work := idLayers(t)
	mnt := mountOvlfs(t, []string{lower}, upper, work, "squash_to_root")
	for _, n := range []string{"root", "user", "other"} {
		wantOwner(t, filepath.Join(mnt, n), 0, 0)
	}
	lower2, upper2, work2 := idLayers(t)
	mnt2 := mountOvlfs(t, []string{lower2}, upper2, work2, "squash_to_root", "squash_to_uid=7", "squash_to_gid=8")
	wantOwner(t, filepath.Join(mnt2, "user"), 7, 8)
	if err := os.WriteFile(filepath.Join(mnt2, "user"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantOwner(t, filepath.Join(upper2, "user"), 1000, 1000)
}
