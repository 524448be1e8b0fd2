package tests

// TestRelPosix: every case of go-fuse's posixtest package (posixtest.All)
// against ovlfs, each in a fresh mount, three times: over an empty lower layer
// (the case runs at the mount root, all in the upper) and in a directory
// that only a lower layer holds, next to lower files (the first create
// copies the directory up; lookups and listings merge), and the latter
// again on a tmpfs. posixtest skips a case the backing filesystem cannot do
// (large xattrs on ext4); such a skip counts only when the same case skips
// on the kernel overlay over the same layers too (run in a helper process).
// No case is skipped as "not for overlays". A case whose expectation the
// kernel overlay itself does not meet (relPosixKernelDecides) runs on both in
// helper processes and passes when ovlfs gives what the kernel overlay gives.

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
)

// relPosixSpec is what a posix helper process runs: posixtest case Case in
// Dir; it writes "pass", "skip: WHY" or "fail" to Result.
type relPosixSpec struct {
	Case, Dir, Result string
}

func init() {
	relTWorkers["posix"] = func(t *testing.T, spec string) {
		var s relPosixSpec
		if err := relReadSpec(spec, &s); err != nil {
			t.Fatal(err)
		}
		fn := posixtest.All[s.Case]
		if fn == nil {
			t.Fatalf("no posixtest case %q", s.Case)
		}
		t.Cleanup(func() {
			res := "pass"
			if t.Failed() {
				res = "fail"
			} else if t.Skipped() {
				res = "skip"
			}
			os.WriteFile(s.Result, []byte(res), 0o644)
		})
		fn(t, s.Dir)
	}
}

// relPosixVariants are the layer setups each case runs on: "emptylower"
// (the case runs at the mount root, everything in the upper), "lowerdir" (in
// a directory only the lower holds, next to lower files: the first create
// copies it up, lookups and listings merge), "tmpfs" (lowerdir with the
// layers on a tmpfs, whose large xattrs ext4 lacks).
var relPosixVariants = []string{"emptylower", "lowerdir", "tmpfs"}

// relPosixLayers makes a lower and an upper for one run of variant in dir
// and returns the layers and the directory (relative to the mount) the case
// runs in.
func relPosixLayers(t *testing.T, dir, variant string) (lower, upper, work, sub string) {
	t.Helper()
	if variant == "tmpfs" {
		dir = filepath.Join(dir, "tmpfs")
		mkdirs(t, dir)
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m,mode=0755"); err != nil {
			t.Fatalf("mount tmpfs on %s: %v", dir, err)
		}
		t.Cleanup(func() {
			// Detached: the kernel may still hold files of a FUSE
			// passthrough for a moment after the daemon is gone.
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("umount -l %s: %v", dir, err)
			}
		})
	}
	lower, upper, work = filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	mkdirs(t, lower)
	mkdirs(t, upper)
	mkdirs(t, work)
	if variant == "emptylower" {
		return lower, upper, work, "."
	}
	mkdirMode(t, filepath.Join(lower, "case"), 0o755)
	mkdirMode(t, filepath.Join(lower, "other"), 0o755)
	writeFile(t, filepath.Join(lower, "other", "file"), []byte("lower data\n"), 0o644)
	writeFile(t, filepath.Join(lower, "top"), []byte("top\n"), 0o644)
	symlink(t, "other/file", filepath.Join(lower, "link"))
	return lower, upper, work, "case"
}

// relPosixKernelDecides are the posixtest cases that expect what no local
// filesystem does, with why; on these the kernel overlay is the oracle.
var relPosixKernelDecides = map[string]string{
	// Two fds of one process: the second F_SETLK must fail with EAGAIN.
	// POSIX locks belong to the process, so it succeeds on the kernel
	// overlay, ext4 and tmpfs alike (go-fuse's own test expects the
	// semantics of a server that forwards locks as OFD locks).
	"FcntlFlockLocksFile": "a process's own POSIX locks through two fds",
}

// relPosixInWorker runs case name in dir (on a mount) in a helper process
// and returns "pass", "skip" or "fail", and the helper's output.
func relPosixInWorker(t *testing.T, name, dir string) (string, string) {
	t.Helper()
	tmp := t.TempDir()
	res := filepath.Join(tmp, "result")
	cmd, out := relStartWorker(t, "posix", relPosixSpec{Case: name, Dir: dir, Result: res}, tmp)
	err := relWaitCmd(cmd, 5*time.Minute)
	b, _ := os.ReadFile(out)
	r, _ := os.ReadFile(res)
	if len(r) == 0 {
		return "fail", fmt.Sprintf("helper: %v, no result\n%s", err, b)
	}
	return string(r), string(b)
}

// relPosixOnKernel runs case name on a fresh kernel overlay in a helper
// process.
func relPosixOnKernel(t *testing.T, name, variant string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	lower, upper, work, sub := relPosixLayers(t, dir, variant)
	mnt := mountKernel(t, []string{lower}, upper, work, wrKernelOpts()...)
	return relPosixInWorker(t, name, filepath.Join(mnt, sub))
}

func TestRelPosix(t *testing.T) {
	relRequire(t)
	var names []string
	for n := range posixtest.All {
		names = append(names, n)
	}
	sort.Strings(names)
	tried, passed := 0, 0
	var failed, bothSkip []string
	for _, variant := range relPosixVariants {
		for _, name := range names {
			t.Run(variant+"/"+name, func(t *testing.T) {
				tried++
				dir := t.TempDir()
				lower, upper, work, sub := relPosixLayers(t, dir, variant)
				mnt := mountOvlfs(t, []string{lower}, upper, work)
				pid := relDaemon(t, mnt)
				if why, ok := relPosixKernelDecides[name]; ok {
					got, gotOut := relPosixInWorker(t, name, filepath.Join(mnt, sub))
					want, wantOut := relPosixOnKernel(t, name, variant)
					if got != want {
						t.Errorf("%s (%s): ovlfs gives %s, the kernel overlay %s\novlfs:\n%s\nkernel:\n%s", name, why, got, want, gotOut, wantOut)
					}
				}
				var inner *testing.T
				t.Run("ovlfs", func(t *testing.T) {
					inner = t
					if _, ok := relPosixKernelDecides[name]; ok {
						t.Skip("the kernel overlay decides (above)")
					}
					posixtest.All[name](t, filepath.Join(mnt, sub))
				})
				if !processAlive(pid) || !isMounted(mnt) {
					t.Errorf("after %s the daemon (pid %d) is gone or %s is no longer mounted", name, pid, mnt)
				}
				if _, ok := relPosixKernelDecides[name]; !ok && inner.Skipped() && !t.Failed() {
					// posixtest skips a case the backing fs cannot do; the
					// kernel overlay on the same fs must skip it too.
					res, out := relPosixOnKernel(t, name, variant)
					if res != "skip" {
						t.Errorf("posixtest skipped %s on ovlfs, but on the kernel overlay it gives %s:\n%s", name, res, out)
					} else {
						bothSkip = append(bothSkip, variant+"/"+name)
					}
				}
				if t.Failed() {
					failed = append(failed, variant+"/"+name)
				} else {
					passed++
				}
			})
		}
	}
	note := fmt.Sprintf("%d cases x %d layer setups, each on a fresh mount", len(names), len(relPosixVariants))
	if len(bothSkip) > 0 {
		note += fmt.Sprintf("; %d skipped by posixtest on ovlfs and the kernel alike: %s", len(bothSkip), strings.Join(bothSkip, " "))
	}
	if len(failed) > 0 {
		note += "; FAILED: " + strings.Join(failed, " ")
	}
	relRow(t, "go-fuse posixtest on ovlfs", tried, passed, tried-passed, note)
}
