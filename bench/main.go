// Command ovlbench measures ovlfs side by side with the kernel overlay and
// fuse-overlayfs: the same workloads on the same prepared data, targets
// interleaved round by round, warm and cold caches, pinned to one CPU by
// default. It prints a table of medians with each target's ratio to the
// kernel overlay and writes a CSV, the table and an SVG chart under
// bench/results. `make bench` and `make bench-quick` run it; README.md beside
// this file says how to read the output.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// nsEnv marks the copy of ovlbench that runs in its own mount namespace.
const nsEnv = "OVLBENCH_PRIVATE_NS"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "lstat" {
		os.Exit(lstatMain(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	var (
		data     = flag.String("data", envOr("OVLBENCH_DATA", "/var/tmp/ovlfs-bench"), "prepared data, made once and cached here")
		ovlfsBin = flag.String("ovlfs", "bin/ovlfs", "the ovlfs binary")
		out      = flag.String("out", "bench/results", "where the CSV, table and chart go")
		quick    = flag.Bool("quick", false, "the quick subset (make bench-quick)")
		only     = flag.String("only", "", "run only the workloads whose name matches this regexp")
		targets  = flag.String("targets", "kernel,ovlfs,fuse-overlayfs", "targets, comma-separated")
		cpu      = flag.Int("cpu", 1, "the CPU that pins the client and the daemon")
		unpinned = flag.Bool("unpinned", false, "do not pin (look at parallelism); more rounds by default")
		rounds   = flag.Int("rounds", 0, "rounds per workload and mode (default 3; 5 unpinned)")
		timeout  = flag.Duration("timeout", 10*time.Minute, "limit for one run of one workload")
		prepOnly = flag.Bool("prepare", false, "prepare the data and stop")
		mirror   = flag.String("mirror", "", "Debian mirror for debootstrap (default: the one apt uses)")
	)
	flag.Parse()
	if os.Geteuid() != 0 {
		return fail(fmt.Errorf("needs root: it mounts the kernel overlay and drops the page cache"))
	}
	if os.Getenv(nsEnv) == "" {
		return fail(reexecPrivate())
	}

	b := &bench{
		data:    *data,
		ovlfs:   abs(*ovlfsBin),
		out:     *out,
		rounds:  *rounds,
		timeout: *timeout,
		mirror:  *mirror,
		mounts:  map[*mount]bool{},
	}
	for _, t := range strings.Split(*targets, ",") {
		switch t = strings.TrimSpace(t); t {
		case kernel, ovlfs, fuseOv:
			b.targets = append(b.targets, t)
		case "":
		default:
			return fail(fmt.Errorf("unknown target %q (kernel, ovlfs, fuse-overlayfs)", t))
		}
	}
	if !*unpinned {
		b.cpu = fmt.Sprint(*cpu)
	}
	if b.rounds == 0 {
		b.rounds = 3
		if *unpinned {
			b.rounds = 5
		}
	}
	var re *regexp.Regexp
	if *only != "" {
		var err error
		if re, err = regexp.Compile(*only); err != nil {
			return fail(err)
		}
	}
	var ws []*workload
	for _, w := range workloads {
		if re != nil && !re.MatchString(w.name) || *quick && len(w.quick) == 0 {
			continue
		}
		if *quick {
			q := *w
			q.modes = w.quick
			w = &q
		}
		ws = append(ws, w)
	}
	if len(ws) == 0 {
		return fail(fmt.Errorf("no workload matches %q", *only))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ctx = ctx
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\novlbench: %v: stopping, unmounting everything\n", s)
		cancel()
		for range sig { // later signals must not kill us before the cleanup
		}
	}()

	if err := b.start(); err != nil {
		return fail(err)
	}
	defer b.cleanup()
	if err := b.installTools(); err != nil {
		return fail(err)
	}
	if err := b.prepare(ws); err != nil {
		return fail(err)
	}
	if *prepOnly {
		return 0
	}
	b.collectInfo(*quick)
	start := time.Now()
	b.checkViews(ws)
	logf("view check took %v", time.Since(start).Round(time.Second))
	b.runAll(ws)
	logf("%d results took %v", len(b.results), time.Since(start).Round(time.Second))
	if err := b.report(ctx.Err() == nil); err != nil {
		return fail(err)
	}
	if ctx.Err() != nil {
		return 130
	}
	return 0
}

// reexecPrivate runs ovlbench again in a private mount namespace, so that no
// other process on the machine sees (and pins) its mounts, and every mount
// goes away with it even if it is killed.
func reexecPrivate() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	unshare, err := lookPath("unshare")
	if err != nil {
		return err
	}
	os.Setenv(nsEnv, "1")
	argv := append([]string{"unshare", "-m", "--propagation", "private", self}, os.Args[1:]...)
	return syscall.Exec(unshare, argv, os.Environ())
}

// start takes the data directory's lock and clears what a killed run left.
func (b *bench) start() error {
	if err := os.MkdirAll(b.data, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(b.data, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("another ovlbench is using %s", b.data)
	}
	b.lock = lock // held until we exit
	b.runDir = filepath.Join(b.data, "run")
	// Mounts of an earlier run lived in its own namespace: none is visible
	// here, so what is left is plain directories.
	if err := os.RemoveAll(b.runDir); err != nil {
		return err
	}
	// A private copy: a rebuild of bin/ovlfs during the run (make test does
	// one) must not change the binary half-way.
	bin, err := os.ReadFile(b.ovlfs)
	if err != nil {
		return fmt.Errorf("%w (run make build)", err)
	}
	if err := os.MkdirAll(b.runDir, 0o755); err != nil {
		return err
	}
	b.ovlfs = filepath.Join(b.runDir, "ovlfs")
	if err := os.WriteFile(b.ovlfs, bin, 0o755); err != nil {
		return err
	}
	// Same for ovlbench itself, whose lstat helper the workloads run.
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return err
	}
	b.self = filepath.Join(b.runDir, "ovlbench")
	return os.WriteFile(b.self, self, 0o755)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func fail(err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(os.Stderr, "ovlbench: %v\n", err)
	return 1
}
