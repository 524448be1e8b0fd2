package tests

// TestCrash*: kill -9 the ovlfs daemon in the middle of a copy-up or a
// directory rename, then remount (ovlfs, then the kernel) on the same dirs:
// the change must be all or nothing, the lower untouched, and ovlfs's scratch
// dir in the workdir empty again.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const wrCrashRounds = 5

func wrShaFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// wrKillDaemon kill -9s the processes serving mnt and detaches the dead mount.
func wrKillDaemon(t *testing.T, mnt string) {
	t.Helper()
	pids := daemonPids(mnt)
	if len(pids) == 0 {
		t.Fatalf("no daemon process found for %s", mnt)
	}
	for _, pid := range pids {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// wrDetach undoes a mount whose daemon is dead.
func wrDetach(t *testing.T, mnt string) {
	t.Helper()
	if !isMounted(mnt) {
		return
	}
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
		t.Logf("fusermount3 -u %s: %v: %s; umount -l", mnt, err, strings.TrimSpace(string(out)))
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Fatalf("umount -l %s: %v", mnt, err)
		}
	}
}

// wrStartChild runs sh -c script in the background; wait returns its result,
// killing it when it is stuck after 20s.
func wrStartChild(t *testing.T, script string) (wait func() string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return func() string {
		select {
		case err := <-done:
			return fmt.Sprintf("%v %s", err, strings.TrimSpace(out.String()))
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			return "child stuck, killed"
		}
	}
}

func wrScratchEmpty(t *testing.T, work, when string) {
	t.Helper()
	names, err := scratchObjects(work)
	if err != nil && !os.IsNotExist(err) {
		t.Errorf("%s: readdir workdir/ovlfs: %v", when, err)
	}
	if len(names) > 0 {
		t.Errorf("%s: workdir/ovlfs still holds %q", when, names)
	}
}

func TestCrashCopyUp(t *testing.T) {
	requireMount(t)
	if ovlfsBuildErr != nil {
		t.Fatal(ovlfsBuildErr)
	}
	dir := t.TempDir()
	lower := filepath.Join(dir, "lower")
	mkdirs(t, lower)
	big := filepath.Join(lower, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, 1<<20)
	rng := rand.New(rand.NewSource(1))
	rng.Read(blk)
	h := sha256.New()
	for i := 0; i < 256; i++ {
		blk[0], blk[1] = byte(i), byte(i>>8)
		f.Write(blk)
		h.Write(blk)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	lowerSha := hex.EncodeToString(h.Sum(nil))
	h.Write([]byte("x\n"))
	appendedSha := hex.EncodeToString(h.Sum(nil))
	outcomes := map[string]int{}
	for round := 0; round < wrCrashRounds; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			upper, work := filepath.Join(dir, fmt.Sprint("upper", round)), filepath.Join(dir, fmt.Sprint("work", round))
			mkdirs(t, upper)
			mkdirs(t, work)
			mnt := mountOvlfs(t, []string{lower}, upper, work)
			wait := wrStartChild(t, fmt.Sprintf("echo x >> '%s/big'", mnt))
			// Wait for the copy-up to show in the scratch dir, then a little more.
			deadline := time.Now().Add(10 * time.Second)
			seen := false
			for time.Now().Before(deadline) {
				if names, _ := scratchObjects(work); len(names) > 0 {
					seen = true
					break
				}
				if wrExists(filepath.Join(upper, "big")) {
					break
				}
			}
			time.Sleep(time.Duration(rand.Intn(40*(round+1))) * time.Millisecond)
			wrKillDaemon(t, mnt)
			res := wait()
			wrDetach(t, mnt)
			t.Logf("scratch entry seen: %v; the appending child: %s", seen, res)
			check := func(who, m string) {
				sum, n, err := wrShaFile(filepath.Join(m, "big"))
				switch {
				case err != nil:
					t.Errorf("%s: reading big after the crash: %v", who, err)
				case sum == lowerSha:
					outcomes[who+": lower content"]++
				case sum == appendedSha:
					outcomes[who+": appended copy"]++
				default:
					t.Errorf("%s: big after the crash is %d bytes, neither the lower content nor the full copy + \"x\\n\" (partial copy under the real name)", who, n)
				}
			}
			m2 := mountOvlfs(t, []string{lower}, upper, work)
			wrScratchEmpty(t, work, "after the ovlfs remount")
			check("ovlfs", m2)
			unmountFuse(t, m2)
			k := mountKernel(t, []string{lower}, upper, work)
			check("kernel", k)
			if err := unix.Unmount(k, 0); err != nil {
				t.Fatal(err)
			}
			if sum, _, err := wrShaFile(big); err != nil || sum != lowerSha {
				t.Errorf("the lower file changed: %v", err)
			}
		})
	}
	t.Logf("copy-up crash outcomes: %v", outcomes)
}

func TestCrashDirRename(t *testing.T) {
	requireMount(t)
	if ovlfsBuildErr != nil {
		t.Fatal(ovlfsBuildErr)
	}
	dir := t.TempDir()
	lower := filepath.Join(dir, "lower")
	const n = 3000
	for i := 0; i < n; i++ {
		sub := fmt.Sprintf("src/d%02d", i%30)
		p := filepath.Join(lower, sub, fmt.Sprintf("f%04d", i))
		if i < 30 {
			mkdirs(t, filepath.Dir(p))
		}
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkdirs(t, filepath.Join(lower, "to"))
	want := len(snapshot(t, filepath.Join(lower, "src")))
	outcomes := map[string]int{}
	for round := 0; round < wrCrashRounds; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			upper, work := filepath.Join(dir, fmt.Sprint("upper", round)), filepath.Join(dir, fmt.Sprint("work", round))
			mkdirs(t, upper)
			mkdirs(t, work)
			mnt := mountOvlfs(t, []string{lower}, upper, work)
			// Some changes inside first, so the rename moves a dir with upper content.
			if round%2 == 1 {
				wrMust(t, "touch in src", os.WriteFile(filepath.Join(mnt, "src/d00/new"), []byte("new"), 0o644))
				wrMust(t, "rm in src", os.Remove(filepath.Join(mnt, "src/d01/f0001")))
			}
			wait := wrStartChild(t, fmt.Sprintf("mv '%s/src' '%s/to/dst'", mnt, mnt))
			time.Sleep(time.Duration(rand.Intn(2000*(round+1))) * time.Microsecond)
			wrKillDaemon(t, mnt)
			res := wait()
			wrDetach(t, mnt)
			t.Logf("mv: %s", res)
			check := func(who, m string) {
				src, dst := wrExists(filepath.Join(m, "src")), wrExists(filepath.Join(m, "to/dst"))
				switch {
				case src && dst:
					t.Errorf("%s: both src and to/dst exist after the crash", who)
				case !src && !dst:
					t.Errorf("%s: neither src nor to/dst exists after the crash", who)
				default:
					name := "src"
					if dst {
						name = "to/dst"
					}
					outcomes[who+": "+name]++
					got := len(snapshot(t, filepath.Join(m, name)))
					// (odd rounds: one file added, one removed: same count)
					if got != want {
						t.Errorf("%s: %s shows %d entries, want %d", who, name, got, want)
					}
				}
			}
			m2 := mountOvlfs(t, []string{lower}, upper, work)
			wrScratchEmpty(t, work, "after the ovlfs remount")
			check("ovlfs", m2)
			ov := snapshot(t, m2)
			unmountFuse(t, m2)
			k := mountKernel(t, []string{lower}, upper, work)
			check("kernel", k)
			requireSameTree(t, "ovlfs vs kernel after the crashed rename", ov, snapshot(t, k))
			if err := unix.Unmount(k, 0); err != nil {
				t.Fatal(err)
			}
		})
	}
	if got := len(snapshot(t, filepath.Join(lower, "src"))); got != want {
		t.Errorf("the lower dir changed: %d entries, had %d", got, want)
	}
	t.Logf("dir rename crash outcomes: %v", outcomes)
}
