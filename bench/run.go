package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// maxRedo bounds how often a run whose caches were not as its mode says is
// redone.
const maxRedo = 3

// A warm run may read again this many file pages (4 KiB) that reclaim had
// evicted, plus refaultsPerSecond for every second it runs (the machine's
// background is ~5/s), before it counts as not warm.
const (
	maxRefaults       = 512
	refaultsPerSecond = 256
)

// result is one run of one workload on one target.
type result struct {
	workload, mode, target string
	round                  int
	value                  float64 // in unit
	unit                   string  // "s", "ms" or "MiB"
	mountMs                float64 // the mount this run used
	hwmKiB                 int64   // the daemon's VmHWM after the run (-1: no daemon)
	redone                 int     // runs thrown away because of page-cache drops
	stillHit               bool    // this run too was disturbed (after maxRedo redos)
	err                    string
}

// session is one workload in one mode: all its rounds on all targets.
type session struct {
	w     *workload
	mode  string
	warm  map[string]*mount // read-only warm workloads keep one mount per target
	since map[string]int64  // drop counter when the target's caches were last warmed
}

func (b *bench) runAll(ws []*workload) {
	total, n := 0, 0
	for _, w := range ws {
		total += len(w.modes) * b.rounds * len(b.targets)
	}
	for _, w := range ws {
		for _, mode := range w.modes {
			s := &session{w: w, mode: mode, warm: map[string]*mount{}, since: map[string]int64{}}
			for r := 0; r < b.rounds && b.ctx.Err() == nil; r++ {
				// Interleaved: each round runs every target, the first one rotating.
				for i := range b.targets {
					t := b.targets[(i+r)%len(b.targets)]
					if b.ctx.Err() != nil {
						break
					}
					n++
					res := b.measure(s, t, r+1)
					if b.ctx.Err() != nil {
						break // an interrupted run has no number
					}
					for _, res := range res {
						b.results = append(b.results, res)
						fmt.Printf("[%3d/%d] %-36s %-10s r%d %-15s %s\n", n, total, w.name, res.mode, r+1, t, res.text())
					}
				}
			}
			for _, m := range s.warm {
				b.unmount(m)
			}
			if b.ctx.Err() != nil {
				return
			}
		}
	}
}

// measure runs once, and again (up to maxRedo times) when the run's caches
// were disturbed: another process dropped them, or a warm run had to read
// again data that reclaim had evicted since its warm-up.
func (b *bench) measure(s *session, t string, round int) []result {
	for redo := 0; ; redo++ {
		res, disturbed := b.attempt(s, t, round)
		if disturbed == "" || redo == maxRedo || b.ctx.Err() != nil {
			for i := range res {
				res[i].redone, res[i].stillHit = redo, disturbed != ""
			}
			return res
		}
		logf("%s, %s, %s: %s; redoing it", s.w.name, s.mode, t, disturbed)
		delete(s.since, t) // warm again
	}
}

// attempt is one run, and what disturbed its caches, if anything.
func (b *bench) attempt(s *session, t string, round int) (res []result, disturbed string) {
	r := result{workload: s.w.name, mode: s.mode, target: t, round: round, unit: "s", hwmKiB: -1}
	switch s.w.kind {
	case mountTime:
		return b.mountOnce(s, r), ""
	case daemonRSS:
		return b.rss(s, r), ""
	}
	return b.timed(s, r)
}

// timed runs the workload's snippet on a mount prepared for the mode.
func (b *bench) timed(s *session, r result) ([]result, string) {
	w, t := s.w, r.target
	failed := func(what string, err error) ([]result, string) {
		r.err = what + err.Error()
		return []result{r}, ""
	}
	m, fresh, err := b.mountFor(s, t)
	if fresh {
		defer b.unmount(m)
	}
	if err != nil {
		return failed("", err)
	}
	if w.setup != "" {
		if _, err := b.script(m, w.setup, false); err != nil {
			return failed("setup: ", err)
		}
	}
	// The previous run's upper was just deleted: flush that (ext4 issues its
	// discards at commit) so that this run does not pay for it.
	if err := runQuiet("sync"); err != nil {
		return failed("", err)
	}
	since := s.since[t]
	if s.mode == "cold" {
		if err := dropCaches(); err != nil {
			return failed("drop_caches: ", err)
		}
		since = drops()
	}
	refaults := vmstat("workingset_refault_file")
	took, err := b.script(m, w.run, true)
	var disturbed string
	if drops() != since {
		disturbed = "another process dropped the page cache"
	} else if n := vmstat("workingset_refault_file") - refaults; s.mode == "warm" && n > maxRefaults+int64(took.Seconds()*refaultsPerSecond) {
		disturbed = fmt.Sprintf("not warm: %d evicted pages were read again (reclaim, e.g. DAMON)", n)
	}
	r.mountMs, r.hwmKiB = ms(m.took), daemonHWM(m)
	if w.teardown != "" {
		if _, err := b.script(m, w.teardown, false); err != nil {
			logf("%s on %s: teardown: %v", w.name, t, err)
		}
	}
	if err != nil {
		return failed("", err)
	}
	r.value = took.Seconds()
	return []result{r}, disturbed
}

// mountFor returns the mount a run uses, with its caches as the mode wants
// them, and whether it is fresh (the caller unmounts it). A read-only warm
// workload keeps one mount per target and warms it by running once. A
// mutating one gets a fresh mount every run, so what can be warm is what it
// reads: just before the run, the lower layers are read directly (alike for
// every target), then its warmup snippet runs. s.since records when.
func (b *bench) mountFor(s *session, t string) (m *mount, fresh bool, err error) {
	w, ds := s.w, datasets[s.w.data]
	if !w.mutates && s.mode == "warm" {
		if m = s.warm[t]; m == nil {
			if m, err = b.mountData(t, ds); err != nil {
				return nil, false, err
			}
			s.warm[t] = m
		}
		if _, warmed := s.since[t]; !warmed {
			if _, err := b.script(m, w.run, false); err != nil {
				return m, false, fmt.Errorf("warm-up: %w", err)
			}
			s.since[t] = drops()
		}
		return m, false, nil
	}
	if m, err = b.mountData(t, ds); err != nil {
		return nil, false, err
	}
	if s.mode == "warm" {
		warm := `tar --xattrs --xattrs-include='*' -C "$D" -cf - ` + strings.Join(ds.layers, " ") + ` | cat >/dev/null` + "\n" + w.warmup
		if _, err := b.script(m, warm, false); err != nil {
			return m, true, fmt.Errorf("warm-up: %w", err)
		}
		s.since[t] = drops()
	}
	return m, true, nil
}

// mountOnce measures the mount command of a fresh mount.
func (b *bench) mountOnce(s *session, r result) []result {
	m, err := b.mountData(r.target, datasets[s.w.data])
	if err != nil {
		r.err = err.Error()
		return []result{r}
	}
	b.unmount(m)
	r.value, r.unit, r.mountMs = ms(m.took), "ms", ms(m.took)
	return []result{r}
}

// rss walks a fresh mount and reads the daemon's peak RSS, then drops the
// kernel's caches (which forgets the inodes, so the daemon may free its
// nodes) and reads its RSS again: the lowest value seen within 2 seconds.
// The kernel overlay has no daemon.
func (b *bench) rss(s *session, r result) []result {
	r.unit = "MiB"
	peak, after := r, r
	peak.mode, after.mode = "peak", "after drop"
	failed := func(err string) []result {
		peak.err, after.err = err, err
		return []result{peak, after}
	}
	if r.target == kernel {
		return failed("n/a")
	}
	m, err := b.mountData(r.target, datasets[s.w.data])
	if err != nil {
		return failed(err.Error())
	}
	defer b.unmount(m)
	if m.pid == 0 {
		return failed("daemon not found")
	}
	if _, err := b.script(m, s.w.run, false); err != nil {
		return failed(err.Error())
	}
	peak.mountMs, peak.hwmKiB = ms(m.took), procStatusKiB(m.pid, "VmHWM")
	peak.value = float64(peak.hwmKiB) / 1024
	if err := dropCaches(); err != nil {
		after.err = err.Error()
		return []result{peak, after}
	}
	low := int64(-1)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if v := procStatusKiB(m.pid, "VmRSS"); v >= 0 && (low < 0 || v < low) {
			low = v
		}
	}
	after.mountMs, after.hwmKiB, after.value = peak.mountMs, peak.hwmKiB, float64(low)/1024
	return []result{peak, after}
}

// script runs a workload snippet in m's mount point, pinned. When timed,
// bash itself takes the time around the snippet (EPOCHREALTIME), so the
// start of bash and taskset is not counted.
func (b *bench) script(m *mount, snippet string, timed bool) (time.Duration, error) {
	body := "set -e -o pipefail\n" + snippet
	env := []string{"M=" + m.mnt, "D=" + b.data, "BENCH=" + b.self}
	var times string
	if timed {
		f, err := os.CreateTemp("", "ovlbench-time")
		if err != nil {
			return 0, err
		}
		f.Close()
		times = f.Name()
		defer os.Remove(times)
		env = append(env, "TIMES="+times)
		body = "set -e -o pipefail\nt0=$EPOCHREALTIME\n" + snippet + "\nt1=$EPOCHREALTIME\necho \"$t0 $t1\" >\"$TIMES\"\n"
	}
	if _, err := b.command(m.mnt, env, b.pin([]string{"bash", "-c", body}), b.timeout); err != nil {
		return 0, err
	}
	if !timed {
		return 0, nil
	}
	out, err := os.ReadFile(times)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return 0, fmt.Errorf("no timing from the run")
	}
	t0, err0 := strconv.ParseFloat(f[0], 64)
	t1, err1 := strconv.ParseFloat(f[1], 64)
	if err0 != nil || err1 != nil {
		return 0, fmt.Errorf("bad timing %q", out)
	}
	return time.Duration((t1 - t0) * float64(time.Second)), nil
}

// dropCaches writes back dirty data and drops the page cache, dentries and
// inodes: echo 3 > /proc/sys/vm/drop_caches.
func dropCaches() error {
	if err := runQuiet("sync"); err != nil {
		return err
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
}

// drops counts the page-cache and slab drops since boot, by anyone: a
// change during a run means someone dropped our caches.
func drops() int64 { return vmstat("drop_pagecache") + vmstat("drop_slab") }

// vmstat reads one counter of /proc/vmstat.
func vmstat(name string) int64 {
	s, _ := os.ReadFile("/proc/vmstat")
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func daemonHWM(m *mount) int64 {
	if m.pid == 0 {
		return -1
	}
	return procStatusKiB(m.pid, "VmHWM")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// text is the result as the progress lines show it.
func (r result) text() string {
	switch r.err {
	case "":
	case "n/a":
		return "n/a (no daemon)"
	default:
		return "fail: " + r.err
	}
	s := formatValue(r.value, r.unit)
	if r.redone > 0 {
		s += fmt.Sprintf(" (redone %dx)", r.redone)
	}
	return s
}
