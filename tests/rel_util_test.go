package tests

// Helpers of the reliability tests (rel_*_test.go, run by `make reliability`
// through tests/reliability/run.sh). Every top-level name starts with "rel".
//
// Each reliability test reports its figures as rows of the final table with
// relRow; the rows go to the file named by $REL_METRICS (one tab-separated
// line per row), which run.sh prints. Without $REL_METRICS they are only
// logged. $REL_LONG=1 selects the long form (more rounds, the soak).

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func relLong() bool { return os.Getenv("REL_LONG") != "" && os.Getenv("REL_LONG") != "0" }

// relPick returns long in the long form, short otherwise; $name overrides both.
func relPick(name string, short, long int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	if relLong() {
		return long
	}
	return short
}

var relMetricsMu sync.Mutex

// relRow records one row of the reliability table: tried is what was
// injected / tried / run, ok what survived / was refused / was verified, lost
// what was lost or escaped (must be 0), note free text (figures such as RSS).
func relRow(t testing.TB, row string, tried, ok, lost int, note string) {
	t.Helper()
	top := t.Name()
	if i := strings.IndexByte(top, '/'); i >= 0 {
		top = top[:i]
	}
	t.Logf("REL %s: tried %d, ok %d, lost %d; %s", row, tried, ok, lost, note)
	p := os.Getenv("REL_METRICS")
	if p == "" {
		return
	}
	relMetricsMu.Lock()
	defer relMetricsMu.Unlock()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Errorf("metrics file: %v", err)
		return
	}
	defer f.Close()
	note = strings.NewReplacer("\t", " ", "\n", " ").Replace(note)
	fmt.Fprintf(f, "%s\t%s\t%d\t%d\t%d\t%s\n", top, row, tried, ok, lost, note)
}

// relRequire skips without root or FUSE and fails when the binary is missing.
func relRequire(t *testing.T) {
	t.Helper()
	requireMount(t)
	if ovlfsBuildErr != nil {
		t.Fatal(ovlfsBuildErr)
	}
}

// relDaemon returns the pid of the daemon serving mnt.
func relDaemon(t testing.TB, mnt string) int {
	t.Helper()
	pids := daemonPids(mnt)
	if len(pids) != 1 {
		t.Fatalf("want one daemon for %s, found %v", mnt, pids)
	}
	return pids[0]
}

// relProcStats returns VmRSS (KiB) and the number of open fds of pid.
func relProcStats(pid int) (rssKiB, fds int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				rssKiB, _ = strconv.Atoi(f[1])
			}
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, 0, err
	}
	return rssKiB, len(ents), nil
}

// relSampler samples a daemon's RSS and fd count every interval.
type relSampler struct {
	mu      sync.Mutex
	pid     int
	samples []relSample
	stop    chan struct{}
	done    chan struct{}
}

type relSample struct {
	at       time.Duration
	rss, fds int
}

func relStartSampler(pid int, every time.Duration) *relSampler {
	s := &relSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	take := func() {
		if rss, fds, err := relProcStats(pid); err == nil {
			s.mu.Lock()
			s.samples = append(s.samples, relSample{time.Since(start), rss, fds})
			s.mu.Unlock()
		}
	}
	take()
	go func() {
		defer close(s.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-s.stop:
				take()
				return
			case <-tk.C:
				take()
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the samples.
func (s *relSampler) Stop() []relSample {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]relSample(nil), s.samples...)
}

func relPeak(ss []relSample) (rss, fds int) {
	for _, s := range ss {
		rss = max(rss, s.rss)
		fds = max(fds, s.fds)
	}
	return
}

// relState is what a client sees of a tree, for exact comparisons: path ->
// "d MODE", "f MODE SIZE SHA", "l TARGET", "p MODE"... Problems (duplicate
// readdir names, unreadable files) are recorded as "!..." values.
func relState(root string) map[string]string {
	out := map[string]string{}
	var walk func(rel string)
	walk = func(rel string) {
		p := filepath.Join(root, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			out[rel] = "!lstat " + errName(err)
			return
		}
		mode := st.Mode & 0o7777
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			out[rel] = fmt.Sprintf("d %04o", mode)
			names, err := readdirNames(p)
			if err != nil {
				out[rel] += " !readdir " + errName(err)
			}
			sort.Strings(names)
			for i, n := range names {
				if i > 0 && names[i-1] == n {
					out[filepath.Join(rel, n)+" (dup)"] = "!duplicate readdir name"
					continue
				}
				walk(filepath.Join(rel, n))
			}
		case unix.S_IFREG:
			h, err := hashFile(p)
			if err != nil {
				h = "!" + err.Error()
			}
			out[rel] = fmt.Sprintf("f %04o %d %s", mode, st.Size, h)
		case unix.S_IFLNK:
			tg, err := os.Readlink(p)
			if err != nil {
				tg = "!" + errName(err)
			}
			out[rel] = "l " + tg
		default:
			out[rel] = fmt.Sprintf("%s %04o %d", fileType(st.Mode), mode, st.Rdev)
		}
	}
	walk(".")
	return out
}

// relDiffState lists the differences between two relState maps.
func relDiffState(got, want map[string]string) []string {
	var d []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			d = append(d, fmt.Sprintf("%q missing (want %s)", k, w))
		} else if g != w {
			d = append(d, fmt.Sprintf("%q is %s, want %s", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%q unexpected: %s", k, g))
		}
	}
	sort.Strings(d)
	return d
}

// relDiskState is a raw, byte-exact view of a directory on disk (not through
// a mount): type, mode, owner, size, content hash, mtime, ctime, xattrs, for
// "unchanged" checks of lower layers and sentinels. With contents false the
// content hash is left out (ctime still catches every change).
func relDiskState(root string, contents bool) map[string]string {
	out := map[string]string{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(root, p)
		if err != nil {
			out[rel] = "!" + err.Error()
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			out[rel] = "!" + err.Error()
			return nil
		}
		s := fmt.Sprintf("%o %d:%d %d m%d.%d c%d.%d", st.Mode, st.Uid, st.Gid, st.Size,
			st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		if fi.Mode().IsRegular() && contents {
			h, herr := hashFile(p)
			if herr != nil {
				h = "!" + herr.Error()
			}
			s += " " + h
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			tg, _ := os.Readlink(p)
			s += " -> " + tg
		}
		if xs, err := listXattrs(p, func(string) bool { return true }); err == nil && len(xs) > 0 {
			s += " " + strings.Join(xs, ",")
		}
		out[rel] = s
		return nil
	})
	return out
}

func relSha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])[:16]
}

// relWorkerEnv names the env variable that turns the test binary into a
// helper process (see TestRelWorker): its value is "KIND:SPECFILE".
const relWorkerEnv = "REL_WORKER"

var relWorkers = map[string]func(spec string) error{}

// relTWorkers are helper kinds that report through the helper's own
// *testing.T (a failure is the process's exit status and output).
var relTWorkers = map[string]func(t *testing.T, spec string){}

// TestRelWorker is not a test: run with $REL_WORKER set, it is a helper
// process of the crash and load tests (one process per worker, so that the
// daemon serves several clients as it would in a container).
func TestRelWorker(t *testing.T) {
	v := os.Getenv(relWorkerEnv)
	if v == "" {
		t.Skip("helper process of the reliability tests; runs only with $" + relWorkerEnv)
	}
	kind, spec, _ := strings.Cut(v, ":")
	if fn := relTWorkers[kind]; fn != nil {
		fn(t, spec)
		return
	}
	fn := relWorkers[kind]
	if fn == nil {
		t.Fatalf("unknown worker kind %q", kind)
	}
	unix.Umask(0)
	if err := fn(spec); err != nil {
		t.Fatal(err)
	}
}

// relStartWorker starts this test binary as a helper process of kind with the
// spec (written as JSON to a temp file). The process writes its output to
// out (a file path).
func relStartWorker(t testing.TB, kind string, spec any, dir string) (*exec.Cmd, string) {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, kind+"-spec-*.json")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Close()
	logf, err := os.CreateTemp(dir, kind+"-out-*.txt")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRelWorker$", "-test.count=1", "-test.timeout=30m")
	cmd.Env = append(os.Environ(), relWorkerEnv+"="+kind+":"+f.Name())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	logf.Close()
	return cmd, logf.Name()
}

func relReadSpec(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// relLines reads the lines of a file.
func relLines(p string) []string {
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// relWaitCmd waits for cmd, killing it after limit.
func relWaitCmd(cmd *exec.Cmd, limit time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		return errors.New("killed: still running after " + limit.String())
	}
}

// relRun runs a command and returns its combined output and error.
func relRun(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func relErrno(err error) string {
	if err == nil {
		return "ok"
	}
	return errName(err)
}

var _ = io.EOF
