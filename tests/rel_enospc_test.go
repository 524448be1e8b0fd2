package tests

// TestRelENOSPC: upper and work on a 16 MiB tmpfs (and few inodes). A
// copy-up that does not fit fails with ENOSPC and is rolled back (the lower
// content still shows, nothing under the real name in upper, the scratch dir
// empty); writes of new data fail with ENOSPC; reads keep being served; after
// space is freed the same copy-up works; the kernel overlay agrees at the end.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRelENOSPC(t *testing.T) {
	relRequire(t)
	dir := t.TempDir()
	lower := filepath.Join(dir, "lower")
	big := relContent(7, 24<<20)
	writeFile(t, filepath.Join(lower, "big"), big, 0o644)
	mid := relContent(8, 6<<20)
	writeFile(t, filepath.Join(lower, "mid"), mid, 0o644)
	for i := 0; i < 20; i++ {
		writeFile(t, filepath.Join(lower, "d", fmt.Sprintf("s%d", i)), relContent(int64(i), 1000), 0o644)
	}
	lowerState := relDiskState(lower, true)
	small := filepath.Join(dir, "small")
	mkdirs(t, small)
	if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=16m,nr_inodes=400"); err != nil {
		t.Skipf("SKIP: tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
	upper, work := filepath.Join(small, "upper"), filepath.Join(small, "work")
	mkdirs(t, upper)
	mkdirs(t, work)
	mnt := mountOvlfs(t, []string{lower}, upper, work)

	tried, ok := 0, 0
	check := func(what string, cond bool, format string, a ...any) {
		tried++
		if cond {
			ok++
		} else {
			t.Errorf("%s: "+format, append([]any{what}, a...)...)
		}
	}
	scratchEmpty := func() bool {
		names, _ := scratchObjects(work)
		return len(names) == 0
	}
	readsServed := func() bool {
		for i := 0; i < 20; i++ {
			b, err := os.ReadFile(filepath.Join(mnt, "d", fmt.Sprintf("s%d", i)))
			if err != nil || relSha(b) != relSha(relContent(int64(i), 1000)) {
				return false
			}
		}
		b, err := os.ReadFile(filepath.Join(mnt, "mid"))
		return err == nil && relSha(b) == relSha(mid)
	}

	// 1. A copy-up bigger than the upper fs.
	f, err := os.OpenFile(filepath.Join(mnt, "big"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.Write([]byte("x"))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	check("24 MiB copy-up into 16 MiB", errors.Is(err, unix.ENOSPC), "append: %v, want ENOSPC", err)
	b, rerr := os.ReadFile(filepath.Join(mnt, "big"))
	check("after the failed copy-up", rerr == nil && relSha(b) == relSha(big), "big reads %d bytes (%v), want the lower's %d", len(b), rerr, len(big))
	_, serr := os.Lstat(filepath.Join(upper, "big"))
	check("after the failed copy-up", errors.Is(serr, os.ErrNotExist), "upper/big exists (%v): a partial copy under the real name", serr)
	check("after the failed copy-up", scratchEmpty(), "the scratch dir is not empty")
	// chmod (metadata copy-up still copies the data) fails the same way.
	err = os.Chmod(filepath.Join(mnt, "big"), 0o600)
	check("chmod of the big lower file", errors.Is(err, unix.ENOSPC), "chmod: %v, want ENOSPC", err)
	check("after the failed chmod", scratchEmpty(), "the scratch dir is not empty")

	// 2. Fill the upper with a new file: ENOSPC, reads still served.
	f, err = os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	var werr error
	for i := 0; i < 40 && werr == nil; i++ {
		_, werr = f.Write(chunk)
	}
	if werr == nil {
		werr = f.Sync()
	}
	f.Close()
	check("filling the upper", errors.Is(werr, unix.ENOSPC), "write: %v, want ENOSPC", werr)
	check("upper full", readsServed(), "reads of lower files fail or differ")
	// A copy-up of a small file now has no room either.
	err = os.WriteFile(filepath.Join(mnt, "mid"), []byte("overwrite"), 0o644)
	// O_TRUNC needs no data copy, so the open succeeds and truncates even on
	// a full upper (as with the kernel overlay); the write may then fail.
	// What mid shows from now on is the original, empty, or the new text.
	if b, rerr := os.ReadFile(filepath.Join(mnt, "mid")); rerr == nil {
		t.Logf("overwriting mid on the full upper: %v; it now holds %d bytes", err, len(b))
		switch string(b) {
		case string(mid), "", "overwrite":
			mid = b
		default:
			check("overwriting mid", false, "mid holds %d unexpected bytes", len(b))
		}
	}
	f, err = os.OpenFile(filepath.Join(mnt, "d", "s3"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.Write(make([]byte, 64<<10))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	check("append to a lower file on the full upper", errors.Is(err, unix.ENOSPC), "%v, want ENOSPC", err)
	check("after it", scratchEmpty(), "the scratch dir is not empty")
	if b, err := os.ReadFile(filepath.Join(mnt, "d", "s3")); err == nil {
		check("after it", len(b) == 1000 || len(b) == 1000+64<<10 && relSha(b[:1000]) == relSha(relContent(3, 1000)),
			"d/s3 is %d bytes", len(b))
	}
	// Inodes: many small creates until ENOSPC.
	var ierr error
	for i := 0; i < 1000 && ierr == nil; i++ {
		ierr = os.Mkdir(filepath.Join(mnt, fmt.Sprintf("i%d", i)), 0o755)
	}
	check("running out of inodes", errors.Is(ierr, unix.ENOSPC), "mkdir: %v, want ENOSPC", ierr)
	err = os.Chmod(filepath.Join(mnt, "d", "s5"), 0o600)
	check("chmod (copy-up) with no inodes left", errors.Is(err, unix.ENOSPC), "%v, want ENOSPC", err)
	check("no inodes left", scratchEmpty(), "the scratch dir is not empty")
	check("no inodes left", readsServed(), "reads of lower files fail or differ")

	// 3. Free the space: the copy-up of a 6 MiB file works again.
	for i := 0; i < 1000; i++ {
		os.Remove(filepath.Join(mnt, fmt.Sprintf("i%d", i)))
	}
	check("freeing space", os.Remove(filepath.Join(mnt, "filler")) == nil, "rm filler failed")
	f, err = os.OpenFile(filepath.Join(mnt, "mid"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.Write([]byte("tail"))
		f.Close()
	}
	check("copy-up after freeing space", err == nil, "append to mid: %v", err)
	unmountFuse(t, mnt)
	k := mountKernel(t, []string{lower}, upper, work)
	if b, err := os.ReadFile(filepath.Join(k, "big")); err != nil || relSha(b) != relSha(big) {
		t.Errorf("kernel: big is %d bytes (%v), want the lower content", len(b), err)
	}
	if d := relDiffState(relDiskState(lower, true), lowerState); len(d) > 0 {
		t.Errorf("the lower layer changed: %s", strings.Join(d, "; "))
	}
	relRow(t, "full upper (16 MiB tmpfs): ENOSPC, rollback, reads", tried, ok, tried-ok, "copy-ups rolled back, scratch empty, reads served")
}
