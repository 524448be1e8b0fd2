package tests

// TestRelLoad: N helper processes x M mixed operations on private and shared
// dirs of one mount, every read checked against the worker's own model as it
// goes; concurrent copy-ups of the same lower files; O_APPEND records from
// every worker into one shared file. Afterwards every model is checked
// through the mount, after a remount by ovlfs, and through the kernel overlay.
// Then fio with verify=crc32c and stress-ng's filesystem stressors run in the
// mount. The daemon's RSS and fd count are sampled all along.
//
// TestRelManyMounts: 50 ovlfs mounts at once, idle RSS per daemon.
// TestRelSoak (long form only): 10 minutes of the load, RSS and fds sampled.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type relLoadSpec struct {
	Root   string
	ID     int
	Ops    int
	Until  time.Time // when set, run until then instead of Ops
	Seed   int64
	Out    string
	Shared []string // lower files of shared/, with their sha
	Sums   []string
}

type relLoadResult struct {
	Ops, Verified, Appends int
	Failed                 int               // operations that failed or read wrong data
	Files                  map[string]string // path -> relSha of content, as the worker left it
	Errors                 []string
	// Readdir passes of the shared dir, and those that showed a name twice
	// or lacked one of the worker's own names (present all along).
	Readdirs, ReaddirBad int
	ReaddirErrors        []string
}

const relRecLen = 64

func init() {
	relWorkers["load"] = relLoadWorker
}

func relLoadWorker(specPath string) error {
	var sp relLoadSpec
	if err := relReadSpec(specPath, &sp); err != nil {
		return err
	}
	rng := rand.New(rand.NewSource(sp.Seed))
	res := relLoadResult{Files: map[string]string{}}
	model := map[string][]byte{} // rel path -> content
	priv := fmt.Sprintf("p%d", sp.ID)
	// Lower files of the private dir.
	for i := 0; i < 10; i++ {
		model[fmt.Sprintf("%s/l%d", priv, i)] = relContent(int64(sp.ID*1000+i), 5000+i)
	}
	fail := func(f string, a ...any) {
		res.Failed++
		if len(res.Errors) < 20 {
			res.Errors = append(res.Errors, fmt.Sprintf(f, a...))
		}
	}
	logfd, err := unix.Open(filepath.Join(sp.Root, "shared", "log"), unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(logfd)
	names := func(dir string) []string {
		var out []string
		for k := range model {
			if filepath.Dir(k) == dir {
				out = append(out, k)
			}
		}
		sort.Strings(out)
		return out
	}
	pickName := func() string {
		if rng.Intn(3) == 0 {
			return fmt.Sprintf("shared/w%d-%d", sp.ID, rng.Intn(12))
		}
		return fmt.Sprintf("%s/f%d", priv, rng.Intn(25))
	}
	existing := func() string {
		var all []string
		for k := range model {
			all = append(all, k)
		}
		if len(all) == 0 {
			return ""
		}
		sort.Strings(all)
		return all[rng.Intn(len(all))]
	}
	for i := 0; sp.Until.IsZero() && i < sp.Ops || !sp.Until.IsZero() && time.Now().Before(sp.Until); i++ {
		res.Ops++
		switch r := rng.Intn(20); {
		case r < 4: // write (create or overwrite)
			n := pickName()
			data := relContent(rng.Int63(), rng.Intn(64<<10))
			if err := os.WriteFile(filepath.Join(sp.Root, n), data, 0o644); err != nil {
				fail("write %s: %v", n, err)
				continue
			}
			model[n] = data
		case r < 6: // append
			n := existing()
			if n == "" {
				continue
			}
			add := relContent(rng.Int63(), 1+rng.Intn(4096))
			f, err := os.OpenFile(filepath.Join(sp.Root, n), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				_, err = f.Write(add)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err != nil {
				fail("append %s: %v", n, err)
				continue
			}
			model[n] = append(append([]byte(nil), model[n]...), add...)
		case r < 10: // read and verify
			n := existing()
			if n == "" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(sp.Root, n))
			if err != nil || !bytes.Equal(b, model[n]) {
				fail("read %s: %d bytes (%v), want %d", n, len(b), err, len(model[n]))
				continue
			}
			res.Verified++
		case r < 12: // rename, sometimes over an existing name
			n := existing()
			if n == "" {
				continue
			}
			to := pickName() // private or this worker's names in shared/ only
			if rng.Intn(2) == 0 {
				if filepath.Dir(n) == "shared" {
					to = fmt.Sprintf("shared/w%d-r%d", sp.ID, rng.Intn(6))
				} else {
					to = fmt.Sprintf("%s/f%d", priv, rng.Intn(25))
				}
			}
			if to == n {
				continue
			}
			if err := os.Rename(filepath.Join(sp.Root, n), filepath.Join(sp.Root, to)); err != nil {
				fail("rename %s %s: %v", n, to, err)
				continue
			}
			model[to] = model[n]
			delete(model, n)
		case r < 13: // unlink
			n := existing()
			if n == "" {
				continue
			}
			if err := os.Remove(filepath.Join(sp.Root, n)); err != nil {
				fail("unlink %s: %v", n, err)
				continue
			}
			delete(model, n)
		case r < 14: // readdir: own names exactly (private), present and unique (shared)
			for _, dir := range []string{priv, "shared"} {
				got, err := readdirNames(filepath.Join(sp.Root, dir))
				if err != nil {
					fail("readdir %s: %v", dir, err)
					continue
				}
				var bad []string
				seen := map[string]bool{}
				for _, g := range got {
					if seen[g] {
						bad = append(bad, fmt.Sprintf("%q twice", g))
					}
					seen[g] = true
				}
				want := names(dir)
				for _, w := range want {
					if !seen[filepath.Base(w)] {
						bad = append(bad, fmt.Sprintf("lacks %q", filepath.Base(w)))
					}
				}
				if dir == priv && len(got) != len(want) {
					bad = append(bad, fmt.Sprintf("%d names, want %d", len(got), len(want)))
				}
				if dir == "shared" {
					res.Readdirs++
					if len(bad) > 0 {
						res.ReaddirBad++
						if len(res.ReaddirErrors) < 5 {
							res.ReaddirErrors = append(res.ReaddirErrors, fmt.Sprintf("readdir %s (%d names): %s", dir, len(got), strings.Join(bad, ", ")))
						}
					}
				} else if len(bad) > 0 {
					fail("readdir %s: %s", dir, strings.Join(bad, ", "))
				}
				res.Verified++
			}
		case r < 16: // concurrent copy-up of a shared lower file, then verify it
			k := rng.Intn(len(sp.Shared))
			p := filepath.Join(sp.Root, "shared", sp.Shared[k])
			if err := os.Chmod(p, 0o644); err != nil {
				fail("chmod %s: %v", p, err)
			}
			b, err := os.ReadFile(p)
			if err != nil || relSha(b) != sp.Sums[k] {
				fail("shared lower %s: %d bytes (%v), not the lower content", sp.Shared[k], len(b), err)
				continue
			}
			res.Verified++
		case r < 18: // a record in the shared log
			rec := make([]byte, relRecLen)
			binary.LittleEndian.PutUint32(rec[0:], uint32(sp.ID))
			binary.LittleEndian.PutUint32(rec[4:], uint32(res.Appends))
			copy(rec[8:60], relContent(int64(sp.ID<<32|res.Appends), 52))
			binary.LittleEndian.PutUint32(rec[60:], crc32.ChecksumIEEE(rec[:60]))
			if _, err := unix.Write(logfd, rec); err != nil {
				fail("log append: %v", err)
				continue
			}
			res.Appends++
		default: // mkdir, a file in it, rmdir
			d := filepath.Join(sp.Root, priv, fmt.Sprintf("dir%d", rng.Intn(4)))
			if err := os.Mkdir(d, 0o755); err != nil {
				fail("mkdir: %v", err)
				continue
			}
			if err := os.WriteFile(filepath.Join(d, "x"), []byte("x"), 0o644); err != nil {
				fail("create in new dir: %v", err)
			}
			if err := os.RemoveAll(d); err != nil {
				fail("rm -r: %v", err)
			}
		}
	}
	for k, v := range model {
		res.Files[k] = relSha(v)
	}
	b, _ := json.Marshal(res)
	return os.WriteFile(sp.Out, b, 0o644)
}

// relLoadLayers makes the lower of the load tests.
func relLoadLayers(t *testing.T, dir string, workers int) (lower string, shared, sums []string) {
	lower = filepath.Join(dir, "lower")
	for i := 0; i < 30; i++ {
		n := fmt.Sprintf("s%d", i)
		data := relContent(int64(500+i), 1000+i*997)
		writeFile(t, filepath.Join(lower, "shared", n), data, 0o644)
		shared, sums = append(shared, n), append(sums, relSha(data))
	}
	writeFile(t, filepath.Join(lower, "shared", "log"), nil, 0o666)
	for w := 0; w < workers; w++ {
		for i := 0; i < 10; i++ {
			writeFile(t, filepath.Join(lower, fmt.Sprintf("p%d", w), fmt.Sprintf("l%d", i)), relContent(int64(w*1000+i), 5000+i), 0o644)
		}
	}
	return
}

// relRunLoad runs the workers on mnt and returns their results.
func relRunLoad(t *testing.T, dir, mnt string, workers, ops int, until time.Time, shared, sums []string, seed int64) []relLoadResult {
	t.Helper()
	type w struct {
		cmd       *exec.Cmd
		log, spec string
	}
	var ws []w
	for i := 0; i < workers; i++ {
		out := filepath.Join(dir, fmt.Sprintf("result%d.json", i))
		cmd, log := relStartWorker(t, "load", relLoadSpec{Root: mnt, ID: i, Ops: ops, Until: until, Seed: seed + int64(i), Out: out, Shared: shared, Sums: sums}, dir)
		ws = append(ws, w{cmd, log, out})
	}
	var res []relLoadResult
	for i, x := range ws {
		if err := relWaitCmd(x.cmd, 30*time.Minute); err != nil {
			b, _ := os.ReadFile(x.log)
			t.Fatalf("worker %d: %v\n%s", i, err, b)
		}
		var r relLoadResult
		b, err := os.ReadFile(x.spec)
		if err != nil || json.Unmarshal(b, &r) != nil {
			t.Fatalf("worker %d result: %v", i, err)
		}
		for _, e := range r.Errors {
			t.Errorf("worker %d: %s", i, e)
		}
		for _, e := range r.ReaddirErrors {
			t.Errorf("worker %d: readdir of shared/ while others change it: %s", i, e)
		}
		res = append(res, r)
	}
	return res
}

// relVerifyLoad checks every worker's files and the shared log under m; it
// returns how many files and records it verified and how many were lost.
func relVerifyLoad(t *testing.T, who, m string, res []relLoadResult) (verified, lost int) {
	t.Helper()
	for i, r := range res {
		for p, sum := range r.Files {
			b, err := os.ReadFile(filepath.Join(m, p))
			if err != nil || relSha(b) != sum {
				lost++
				t.Errorf("%s: worker %d's %s: %d bytes (%v), not what it wrote", who, i, p, len(b), err)
				continue
			}
			verified++
		}
	}
	log, err := os.ReadFile(filepath.Join(m, "shared", "log"))
	if err != nil {
		t.Errorf("%s: shared log: %v", who, err)
		return
	}
	want := 0
	for _, r := range res {
		want += r.Appends
	}
	if len(log) != want*relRecLen {
		t.Errorf("%s: the shared log holds %d bytes, want %d records of %d", who, len(log), want, relRecLen)
	}
	seen := map[[2]uint32]bool{}
	for off := 0; off+relRecLen <= len(log); off += relRecLen {
		rec := log[off : off+relRecLen]
		if crc32.ChecksumIEEE(rec[:60]) != binary.LittleEndian.Uint32(rec[60:]) {
			t.Errorf("%s: torn record at offset %d of the shared log", who, off)
			continue
		}
		k := [2]uint32{binary.LittleEndian.Uint32(rec[0:]), binary.LittleEndian.Uint32(rec[4:])}
		if seen[k] {
			t.Errorf("%s: record %v twice in the shared log", who, k)
		}
		seen[k] = true
		verified++
	}
	for i, r := range res {
		for j := 0; j < r.Appends; j++ {
			if !seen[[2]uint32{uint32(i), uint32(j)}] {
				lost++
				t.Errorf("%s: record %d of worker %d lost from the shared log", who, j, i)
			}
		}
	}
	return
}

func relMiB(kib int) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func TestRelLoad(t *testing.T) {
	relRequire(t)
	workers := relPick("REL_WORKERS", 8, 8)
	ops := relPick("REL_OPS", 2500, 10000)
	dir := t.TempDir()
	lower, shared, sums := relLoadLayers(t, dir, workers)
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	mkdirs(t, upper)
	mkdirs(t, work)
	mnt := mountOvlfs(t, []string{lower}, upper, work)
	pid := relDaemon(t, mnt)
	_, fds0, _ := relProcStats(pid)
	sampler := relStartSampler(pid, 2*time.Second)
	defer sampler.Stop()

	res := relRunLoad(t, dir, mnt, workers, ops, time.Time{}, shared, sums, time.Now().UnixNano())
	totalOps, inline, rdTotal, rdBad, failed := 0, 0, 0, 0, 0
	for _, r := range res {
		totalOps += r.Ops
		failed += r.Failed
		inline += r.Verified
		rdTotal += r.Readdirs
		rdBad += r.ReaddirBad
	}
	_, fdsAfterWorkers, _ := relProcStats(pid)
	v1, lost1 := relVerifyLoad(t, "same mount", mnt, res)

	// fio with verification, in the mount.
	fioOK, fioNote := relFio(t, filepath.Join(mnt, "fio"))
	// stress-ng's filesystem stressors, in the mount.
	sngOK, sngNote := relStressNG(t, filepath.Join(mnt, "stress-ng"))
	samples := sampler.Stop()
	peakRSS, peakFds := relPeak(samples)
	_, fdsEnd, _ := relProcStats(pid)
	unmountFuse(t, mnt)

	m2 := mountOvlfs(t, []string{lower}, upper, work)
	v2, lost2 := relVerifyLoad(t, "ovlfs remount", m2, res)
	unmountFuse(t, m2)
	k := mountKernel(t, []string{lower}, upper, work, wrKernelOpts()...)
	v3, lost3 := relVerifyLoad(t, "kernel", k, res)
	relRow(t, fmt.Sprintf("load: %d processes x %d mixed ops, data verified", workers, ops), totalOps, totalOps-failed, lost1+lost2+lost3,
		fmt.Sprintf("%d reads checked inline; files+log records checked after: %d (mount), %d (ovlfs remount), %d (kernel)", inline, v1, v2, v3))
	relRow(t, "readdir of a merged dir while other processes change it", rdTotal, rdTotal-rdBad, rdBad,
		"each pass must list once every name present all along (POSIX; the kernel overlay caches the merged listing per open dir)")
	fioRow := 0
	if fioOK {
		fioRow = 1
	}
	relRow(t, "fio verify=crc32c in the mount", 1, fioRow, 1-fioRow, fioNote)
	sngRow := 0
	if sngOK {
		sngRow = 1
	}
	relRow(t, "stress-ng --class filesystem in the mount", 1, sngRow, 1-sngRow, sngNote)
	relRow(t, "daemon RSS and fds under load", len(samples), len(samples), 0,
		fmt.Sprintf("peak RSS %s, fds: %d at start, peak %d, %d after the workers, %d at the end", relMiB(peakRSS), fds0, peakFds, fdsAfterWorkers, fdsEnd))
}

// relFio runs fio with crc32c verification in dir.
func relFio(t *testing.T, dir string) (bool, string) {
	if _, err := exec.LookPath("fio"); err != nil {
		t.Errorf("fio is not installed (apt-get install fio)")
		return false, "fio missing"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("mkdir %s: %v", dir, err)
		return false, err.Error()
	}
	size := "32M"
	if relLong() {
		size = "256M"
	}
	ok := true
	var notes []string
	for _, job := range [][]string{
		{"--name=randwrite", "--rw=randwrite", "--bs=4k", "--numjobs=4"},
		{"--name=seqwrite", "--rw=write", "--bsrange=1k-256k", "--numjobs=2"},
		{"--name=randrw-backlog", "--rw=randwrite", "--bs=16k", "--numjobs=2", "--verify_backlog=64"},
	} {
		args := append([]string{"--directory=" + dir, "--size=" + size, "--ioengine=psync", "--verify=crc32c",
			"--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--group_reporting", "--minimal"}, job...)
		cmd := exec.Command("fio", args...)
		cmd.Dir = t.TempDir() // fio leaves *-verify.state files in its cwd
		b, err := cmd.CombinedOutput()
		out := string(b)
		if err != nil || strings.Contains(out, "verify:") || strings.Contains(out, "bad magic") {
			ok = false
			t.Errorf("fio %s: %v\n%s", strings.Join(args, " "), err, shorten(out, 3000))
		}
		notes = append(notes, strings.TrimPrefix(job[0], "--name="))
	}
	return ok, fmt.Sprintf("%s of %s per job, all verified", strings.Join(notes, ", "), size)
}

// relStressNG runs every filesystem stressor of stress-ng in dir at once.
func relStressNG(t *testing.T, dir string) (bool, string) {
	if _, err := exec.LookPath("stress-ng"); err != nil {
		t.Errorf("stress-ng is not installed (apt-get install stress-ng)")
		return false, "stress-ng missing"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err.Error()
	}
	secs := "20"
	if relLong() {
		secs = "120"
	}
	// Stressors that test something else than the file system in the
	// mount (other mounts, devices, kernel interfaces of the host).
	exclude := "bind-mount,binderfs,procfs,ioprio,verity,fanotify,dnotify,inotify,chattr,inode-flags,file-ioctl,fiemap,handle"
	cmd := exec.Command("stress-ng", "--class", "filesystem", "--all", "1", "--exclude", exclude,
		"--timeout", secs+"s", "--temp-path", dir, "--verify", "--metrics-brief")
	out, err := cmd.CombinedOutput()
	s := string(out)
	var failed []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(l), "fail") || strings.Contains(l, "unsuccessful") {
			failed = append(failed, strings.TrimSpace(l))
		}
	}
	passedLine := ""
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, "dispatching hogs:"); i >= 0 {
			passedLine = fmt.Sprintf("%d stressors at once", strings.Count(l[i:], ",")+1)
		}
		if i := strings.Index(l, "successful run completed"); i >= 0 {
			passedLine += ", " + strings.TrimSpace(l[i:])
		}
	}
	if err != nil || len(failed) > 0 {
		t.Errorf("stress-ng in the mount: %v\n%s", err, shorten(strings.Join(failed, "\n"), 4000))
		return false, fmt.Sprintf("%ss; %s; FAILED: %s", secs, passedLine, shorten(strings.Join(failed, " | "), 300))
	}
	return true, fmt.Sprintf("%ss, excluded %s; %s", secs, exclude, passedLine)
}

func TestRelManyMounts(t *testing.T) {
	relRequire(t)
	n := relPick("REL_MOUNTS", 50, 50)
	dir := t.TempDir()
	lower := filepath.Join(dir, "lower")
	for i := 0; i < 100; i++ {
		writeFile(t, filepath.Join(lower, "etc", fmt.Sprintf("f%d", i)), relContent(int64(i), 2000), 0o644)
	}
	var mnts []string
	var pids []int
	for i := 0; i < n; i++ {
		u, w := filepath.Join(dir, fmt.Sprint("u", i)), filepath.Join(dir, fmt.Sprint("w", i))
		mkdirs(t, u)
		mkdirs(t, w)
		m := mountOvlfs(t, []string{lower}, u, w)
		mnts = append(mnts, m)
		pids = append(pids, relDaemon(t, m))
	}
	used := 0
	for i, m := range mnts {
		if err := os.WriteFile(filepath.Join(m, "etc", "f1"), []byte(fmt.Sprint("mount ", i)), 0o644); err != nil {
			t.Errorf("mount %d: write: %v", i, err)
		}
		if names, err := readdirNames(filepath.Join(m, "etc")); err != nil || len(names) != 100 {
			t.Errorf("mount %d: readdir: %d names, %v", i, len(names), err)
		} else {
			used++
		}
	}
	ok := 0
	for i, m := range mnts {
		if b, err := os.ReadFile(filepath.Join(m, "etc", "f1")); err != nil || string(b) != fmt.Sprint("mount ", i) {
			t.Errorf("mount %d: f1 is %q (%v)", i, b, err)
		} else {
			ok++
		}
	}
	time.Sleep(2 * time.Second) // idle
	var rss []int
	total := 0
	for _, p := range pids {
		r, _, err := relProcStats(p)
		if err != nil {
			t.Errorf("daemon %d: %v", p, err)
			continue
		}
		rss = append(rss, r)
		total += r
	}
	sort.Ints(rss)
	for _, m := range mnts {
		unmountFuse(t, m)
	}
	left := 0
	for _, p := range pids {
		if processAlive(p) {
			left++
		}
	}
	if left > 0 {
		t.Errorf("%d daemons still run after the unmounts", left)
	}
	note := "no RSS figures"
	if len(rss) > 0 {
		note = fmt.Sprintf("idle RSS per daemon: median %s, max %s, total %s; %d daemons left after unmount", relMiB(rss[len(rss)/2]), relMiB(rss[len(rss)-1]), relMiB(total), left)
	}
	relRow(t, fmt.Sprintf("%d concurrent ovlfs mounts", n), n, min(ok, used), n-min(ok, used), note)
}

func TestRelSoak(t *testing.T) {
	if !relLong() {
		t.Skip("the 10-minute soak runs in the long form (REL_LONG=1)")
	}
	relRequire(t)
	dur := time.Duration(relPick("REL_SOAK_SECONDS", 600, 600)) * time.Second
	workers := 6
	dir := t.TempDir()
	lower, shared, sums := relLoadLayers(t, dir, workers)
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	mkdirs(t, upper)
	mkdirs(t, work)
	mnt := mountOvlfs(t, []string{lower}, upper, work)
	pid := relDaemon(t, mnt)
	sampler := relStartSampler(pid, 5*time.Second)
	res := relRunLoad(t, dir, mnt, workers, 0, time.Now().Add(dur), shared, sums, time.Now().UnixNano())
	samples := sampler.Stop()
	ops := 0
	for _, r := range res {
		ops += r.Ops
	}
	v, lost := relVerifyLoad(t, "after the soak", mnt, res)
	failed := 0
	for _, r := range res {
		failed += r.Failed
	}
	lost += failed
	// Bounded: the last third of the soak peaks no higher than 1.5x the
	// first third plus 64 MiB; fds in the last third no more than the first
	// third's peak plus 64.
	third := len(samples) / 3
	r1, f1 := relPeak(samples[:third])
	r3, f3 := relPeak(samples[2*third:])
	if third > 0 && r3 > r1*3/2+64<<10 {
		t.Errorf("RSS grows: peak %s in the first third, %s in the last", relMiB(r1), relMiB(r3))
	}
	if third > 0 && f3 > f1+64 {
		t.Errorf("fds grow: peak %d in the first third, %d in the last", f1, f3)
	}
	// Forgetting inodes gives memory and fds back.
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0)
	time.Sleep(3 * time.Second)
	rssAfter, fdsAfter, _ := relProcStats(pid)
	// As the load row: ops tried and ops that succeeded; lost counts failed
	// ops and files or log records not as written.
	relRow(t, fmt.Sprintf("soak %s: %d processes", dur, workers), ops, ops-failed, lost,
		fmt.Sprintf("%d files+log records verified after; RSS peak %s (first third) / %s (last third), %s after drop_caches; fds peak %d / %d, %d after; %d samples",
			v, relMiB(r1), relMiB(r3), relMiB(rssAfter), f1, f3, fdsAfter, len(samples)))
}
