package tests

// TestRelCrash: kill -9 of the daemon at many random points of a random
// sequence of operations (copy-up of big lower files, renames of files and
// directories, unlink of lower entries, rmdir then mkdir over the whiteout,
// large writes, truncates, chmods), each round on a fresh upper over one
// lower. A helper process runs the operations one by one and logs each one
// that returned; the test kills the daemon at a random moment, then remounts
// with ovlfs and with the kernel overlay and checks that the merged tree is
// exactly the model after the operations that returned, or after those plus
// the one in flight (a large write in flight may leave a prefix of its data);
// that ovlfs's scratch dir is empty after the remount; and that the lower
// layer is unchanged (ctime of every entry each round, every byte at the end).

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// relOp is one operation of a crash sequence, run by the helper process.
type relOp struct {
	Kind   string // append chmod truncate create writebig rename unlink rmdir mkdir symlink
	Path   string
	Path2  string `json:",omitempty"` // rename target, symlink target
	Mode   uint32 `json:",omitempty"`
	Size   int64  `json:",omitempty"` // truncate size, writebig size
	Seed   int64  `json:",omitempty"` // content of create, append, writebig
	Length int    `json:",omitempty"` // create, append length
}

type relCrashSpec struct {
	Root string
	Log  string
	Ops  []relOp
}

// relContent is the deterministic content of seed.
func relContent(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func init() {
	relWorkers["crash"] = relCrashWorker
}

// relCrashWorker runs the operations and appends "ok I" to the log after each
// one that returned, "err I ERRNO" for the first that failed, then stops.
func relCrashWorker(specPath string) error {
	var spec relCrashSpec
	if err := relReadSpec(specPath, &spec); err != nil {
		return err
	}
	log, err := os.OpenFile(spec.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	for i, op := range spec.Ops {
		if err := relDoOp(spec.Root, op); err != nil {
			fmt.Fprintf(log, "err %d %s\n", i, relErrno(err))
			return nil
		}
		fmt.Fprintf(log, "ok %d\n", i)
	}
	return nil
}

func relDoOp(root string, op relOp) error {
	p := filepath.Join(root, op.Path)
	switch op.Kind {
	case "append", "create":
		flags := unix.O_WRONLY | unix.O_APPEND
		if op.Kind == "create" {
			flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL
		}
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, op.Mode)
		if err != nil {
			return err
		}
		if _, err := unix.Write(fd, relContent(op.Seed, op.Length)); err != nil {
			unix.Close(fd)
			return err
		}
		return unix.Close(fd)
	case "writebig":
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		data := relContent(op.Seed, int(op.Size))
		for off := 0; off < len(data); off += 256 << 10 {
			end := min(off+256<<10, len(data))
			if _, err := unix.Write(fd, data[off:end]); err != nil {
				unix.Close(fd)
				return err
			}
		}
		if err := unix.Fsync(fd); err != nil {
			unix.Close(fd)
			return err
		}
		return unix.Close(fd)
	case "chmod":
		return unix.Fchmodat(unix.AT_FDCWD, p, op.Mode, 0)
	case "truncate":
		return unix.Truncate(p, op.Size)
	case "rename":
		return unix.Rename(p, filepath.Join(root, op.Path2))
	case "unlink":
		return unix.Unlink(p)
	case "rmdir":
		return unix.Rmdir(p)
	case "mkdir":
		return unix.Mkdir(p, op.Mode)
	case "symlink":
		return unix.Symlink(op.Path2, p)
	}
	return fmt.Errorf("unknown op %q", op.Kind)
}

// relNode is one entry of the crash model.
type relNode struct {
	typ    byte // 'd', 'f', 'l', 'p'
	mode   uint32
	data   []byte
	target string
}

type relModel map[string]*relNode

func (m relModel) clone() relModel {
	c := make(relModel, len(m))
	for k, v := range m {
		n := *v
		c[k] = &n
	}
	return c
}

// render gives the model in relState's format.
func (m relModel) render() map[string]string {
	out := make(map[string]string, len(m))
	for k, n := range m {
		switch n.typ {
		case 'd':
			out[k] = fmt.Sprintf("d %04o", n.mode)
		case 'f':
			out[k] = fmt.Sprintf("f %04o %d %s", n.mode, len(n.data), relSha(n.data))
		case 'l':
			out[k] = "l " + n.target
		case 'p':
			out[k] = fmt.Sprintf("fifo %04o 0", n.mode)
		}
	}
	return out
}

func (m relModel) under(dir string) []string {
	var out []string
	for k := range m {
		if dir == "." && k != "." || strings.HasPrefix(k, dir+"/") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (m relModel) children(dir string) []string {
	var out []string
	for _, k := range m.under(dir) {
		if filepath.Dir(k) == dir {
			out = append(out, k)
		}
	}
	return out
}

// apply changes the model as op does.
func (m relModel) apply(op relOp) {
	switch op.Kind {
	case "append":
		n := m[op.Path]
		n.data = append(append([]byte(nil), n.data...), relContent(op.Seed, op.Length)...)
	case "create":
		m[op.Path] = &relNode{typ: 'f', mode: op.Mode, data: relContent(op.Seed, op.Length)}
	case "writebig":
		m[op.Path] = &relNode{typ: 'f', mode: 0o644, data: relContent(op.Seed, int(op.Size))}
	case "chmod":
		m[op.Path].mode = op.Mode
	case "truncate":
		n := m[op.Path]
		d := make([]byte, op.Size)
		copy(d, n.data)
		n.data = d
	case "rename":
		moved := map[string]*relNode{}
		for _, k := range append([]string{op.Path}, m.under(op.Path)...) {
			moved[op.Path2+strings.TrimPrefix(k, op.Path)] = m[k]
			delete(m, k)
		}
		for k, v := range moved {
			m[k] = v
		}
	case "unlink", "rmdir":
		delete(m, op.Path)
	case "mkdir":
		m[op.Path] = &relNode{typ: 'd', mode: op.Mode}
	case "symlink":
		m[op.Path] = &relNode{typ: 'l', target: op.Path2}
	}
}

// relGenOps makes n valid operations on a copy of model.
func relGenOps(rng *rand.Rand, model relModel, n int) []relOp {
	m := model.clone()
	var ops []relOp
	seq := 0
	newName := func() string {
		seq++
		if rng.Intn(5) == 0 {
			return fmt.Sprintf("new %d", seq)
		}
		return fmt.Sprintf("n%d", seq)
	}
	pick := func(typ byte, pred func(string) bool) string {
		var c []string
		for k, v := range m {
			if k != "." && v.typ == typ && (pred == nil || pred(k)) {
				c = append(c, k)
			}
		}
		if len(c) == 0 {
			return ""
		}
		sort.Strings(c)
		return c[rng.Intn(len(c))]
	}
	anyDir := func() string {
		if d := pick('d', nil); d != "" && rng.Intn(4) != 0 {
			return d
		}
		return "."
	}
	big := func(k string) bool { return len(m[k].data) > 1<<20 }
	add := func(op relOp) {
		ops = append(ops, op)
		m.apply(op)
	}
	for len(ops) < n {
		switch r := rng.Intn(22); {
		case r < 4: // append: copy-up, often of a big lower file
			f := pick('f', nil)
			if rng.Intn(2) == 0 {
				if b := pick('f', big); b != "" {
					f = b
				}
			}
			if f != "" {
				add(relOp{Kind: "append", Path: f, Seed: rng.Int63(), Length: 1 + rng.Intn(300)})
			}
		case r < 6:
			if rng.Intn(3) == 0 {
				if d := pick('d', nil); d != "" {
					add(relOp{Kind: "chmod", Path: d, Mode: []uint32{0o755, 0o700, 0o711, 0o1777}[rng.Intn(4)]})
				}
			} else if f := pick('f', nil); f != "" {
				add(relOp{Kind: "chmod", Path: f, Mode: []uint32{0o644, 0o600, 0o755, 0o444, 0o4755}[rng.Intn(5)]})
			}
		case r < 7:
			if f := pick('f', nil); f != "" {
				add(relOp{Kind: "truncate", Path: f, Size: int64(rng.Intn(len(m[f].data) + 2))})
			}
		case r < 9:
			add(relOp{Kind: "create", Path: filepath.Join(anyDir(), newName()), Mode: 0o644, Seed: rng.Int63(), Length: rng.Intn(9000)})
		case r < 11:
			add(relOp{Kind: "writebig", Path: filepath.Join(anyDir(), newName()), Seed: rng.Int63(), Size: int64(1+rng.Intn(8)) << 20})
		case r < 14: // rename a file (sometimes over another file)
			src := pick('f', nil)
			if src == "" {
				continue
			}
			dst := filepath.Join(anyDir(), newName())
			if rng.Intn(5) == 0 {
				if o := pick('f', func(k string) bool { return k != src }); o != "" {
					dst = o
				}
			}
			add(relOp{Kind: "rename", Path: src, Path2: dst})
		case r < 16: // rename a directory, often one with lower content
			src := pick('d', nil)
			if src == "" {
				continue
			}
			to := pick('d', func(k string) bool { return k != src && !strings.HasPrefix(k, src+"/") })
			if to == "" || rng.Intn(3) == 0 {
				to = "."
			}
			add(relOp{Kind: "rename", Path: src, Path2: filepath.Join(to, newName())})
		case r < 18: // unlink, often a lower entry
			if f := pick('f', nil); f != "" {
				add(relOp{Kind: "unlink", Path: f})
			} else if l := pick('l', nil); l != "" {
				add(relOp{Kind: "unlink", Path: l})
			}
		case r < 20: // empty a small dir, rmdir it, mkdir over its whiteout, fill it
			d := pick('d', func(k string) bool {
				for _, c := range m.under(k) {
					if m[c].typ == 'd' {
						return false
					}
				}
				return len(m.under(k)) <= 12
			})
			if d == "" {
				continue
			}
			for _, c := range m.children(d) {
				add(relOp{Kind: "unlink", Path: c})
			}
			add(relOp{Kind: "rmdir", Path: d})
			add(relOp{Kind: "mkdir", Path: d, Mode: 0o755})
			add(relOp{Kind: "create", Path: filepath.Join(d, newName()), Mode: 0o600, Seed: rng.Int63(), Length: 10})
		case r < 21:
			add(relOp{Kind: "mkdir", Path: filepath.Join(anyDir(), newName()), Mode: 0o755})
		default:
			add(relOp{Kind: "symlink", Path: filepath.Join(anyDir(), newName()), Path2: []string{"/etc/passwd", "../../x", "rel/target", "f0"}[rng.Intn(4)]})
		}
	}
	return ops
}

// relCrashLower makes the lower layer and returns its model.
func relCrashLower(t *testing.T, lower string) relModel {
	m := relModel{".": {typ: 'd', mode: 0o755}}
	mkdirs(t, lower)
	chmod(t, lower, 0o755)
	file := func(rel string, data []byte, mode uint32) {
		writeFile(t, filepath.Join(lower, rel), data, mode)
		m[rel] = &relNode{typ: 'f', mode: mode, data: data}
	}
	dir := func(rel string) {
		mkdirMode(t, filepath.Join(lower, rel), 0o755)
		m[rel] = &relNode{typ: 'd', mode: 0o755}
	}
	dir("big")
	for i := 0; i < 3; i++ {
		file(fmt.Sprintf("big/b%d", i), relContent(int64(100+i), 12<<20+i*4096+17), 0o644)
	}
	dir("tree")
	for d := 0; d < 6; d++ {
		dir(fmt.Sprintf("tree/d%d", d))
		for f := 0; f < 15; f++ {
			file(fmt.Sprintf("tree/d%d/f%d", d, f), relContent(int64(d*100+f), 100+f*300), []uint32{0o644, 0o600, 0o755}[f%3])
		}
		dir(fmt.Sprintf("tree/d%d/sub", d))
		file(fmt.Sprintf("tree/d%d/sub/deep", d), []byte("deep"), 0o644)
	}
	dir("small")
	for d := 0; d < 5; d++ {
		dir(fmt.Sprintf("small/s%d", d))
		for f := 0; f < 3; f++ {
			file(fmt.Sprintf("small/s%d/x%d", d, f), relContent(int64(1000+d*10+f), 50), 0o644)
		}
	}
	for i := 0; i < 10; i++ {
		file(fmt.Sprintf("f%d", i), relContent(int64(2000+i), 64<<10+i), 0o644)
	}
	symlink(t, "/etc/passwd", filepath.Join(lower, "abs-link"))
	m["abs-link"] = &relNode{typ: 'l', target: "/etc/passwd"}
	symlink(t, "tree/d0", filepath.Join(lower, "rel-link"))
	m["rel-link"] = &relNode{typ: 'l', target: "tree/d0"}
	return m
}

func TestRelCrash(t *testing.T) {
	relRequire(t)
	rounds := relPick("REL_CRASH_ROUNDS", 40, 300)
	dir := t.TempDir()
	lower := filepath.Join(dir, "lower")
	model := relCrashLower(t, lower)
	lowerFull := relDiskState(lower, true)
	lowerMeta := relDiskState(lower, false)
	outcomes := map[string]int{}
	inflight := map[string]int{}
	kills, survived, scratchBusy := 0, 0, 0
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("REL_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (REL_SEED=%d reruns it)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	for round := 0; round < rounds; round++ {
		rseed := rng.Int63()
		ok := t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			rr := rand.New(rand.NewSource(rseed))
			upper, work := filepath.Join(dir, fmt.Sprint("u", round)), filepath.Join(dir, fmt.Sprint("w", round))
			mkdirs(t, upper)
			mkdirs(t, work)
			defer os.RemoveAll(upper)
			defer os.RemoveAll(work)
			ops := relGenOps(rr, model, 25+rr.Intn(30))
			mnt := mountOvlfs(t, []string{lower}, upper, work)
			logp := filepath.Join(dir, fmt.Sprintf("log%d", round))
			cmd, out := relStartWorker(t, "crash", relCrashSpec{Root: mnt, Log: logp, Ops: ops}, dir)
			// Kill once k operations have returned, plus up to 3ms (in
			// the middle of operation k, most of the time).
			k := rr.Intn(len(ops))
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				ls := relLines(logp)
				if len(ls) >= k || len(ls) > 0 && strings.HasPrefix(ls[len(ls)-1], "err") {
					break
				}
				time.Sleep(200 * time.Microsecond)
			}
			time.Sleep(time.Duration(rr.Intn(3000)) * time.Microsecond)
			if names, _ := scratchObjects(work); len(names) > 0 {
				scratchBusy++ // killed while an object was being built
			}
			wrKillDaemon(t, mnt)
			kills++
			werr := relWaitCmd(cmd, 30*time.Second)
			wrDetach(t, mnt)
			if werr != nil {
				b, _ := os.ReadFile(out)
				t.Fatalf("helper process: %v\n%s", werr, b)
			}
			done := 0
			failErr := ""
			for _, l := range relLines(logp) {
				f := strings.Fields(l)
				if f[0] == "ok" {
					done++
				} else if len(f) == 3 {
					failErr = f[2]
				}
			}
			switch failErr {
			case "", "ENOTCONN", "ECONNABORTED":
			case "EIO":
				// The kernel's answer when the request (or its reply) was
				// being copied between it and the daemon as the kill came:
				// fuse_dev_do_read/fuse_dev_do_write end the request with
				// -EIO when that copy fails while the connection is still
				// up, as a copy into or out of a dying process can. The state is then
				// before or after the op, which the checks below still
				// demand; the same ops without a kill never give EIO.
			default:
				t.Errorf("op %d %+v failed with %s (the daemon was being killed; only ENOTCONN/ECONNABORTED/EIO are expected)", done, ops[done], failErr)
			}
			before := model.clone()
			for _, op := range ops[:done] {
				before.apply(op)
			}
			var flight *relOp
			after := before
			if done < len(ops) {
				flight = &ops[done]
				after = before.clone()
				after.apply(*flight)
				inflight[flight.Kind]++
			} else {
				inflight["(none: all done)"]++
			}
			check := func(who, m string) string {
				got := relState(m)
				return relJudge(t, who, got, before.render(), after.render(), flight)
			}
			m2 := mountOvlfs(t, []string{lower}, upper, work)
			wrScratchEmpty(t, work, "after the ovlfs remount")
			o1 := check("ovlfs", m2)
			unmountFuse(t, m2)
			k2 := mountKernel(t, []string{lower}, upper, work, wrKernelOpts()...)
			o2 := check("kernel", k2)
			if err := unix.Unmount(k2, 0); err != nil {
				t.Fatal(err)
			}
			outcomes["ovlfs "+o1]++
			outcomes["kernel "+o2]++
			if d := relDiffState(relDiskState(lower, false), lowerMeta); len(d) > 0 {
				t.Errorf("the lower layer changed: %s", strings.Join(d[:min(len(d), 10)], "; "))
			}
		})
		if ok {
			survived++
		}
	}
	if d := relDiffState(relDiskState(lower, true), lowerFull); len(d) > 0 {
		t.Errorf("the lower layer changed (bytes): %s", strings.Join(d[:min(len(d), 10)], "; "))
	}
	var fl []string
	for k, v := range inflight {
		fl = append(fl, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(fl)
	var oc []string
	for k, v := range outcomes {
		oc = append(oc, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(oc)
	t.Logf("outcomes: %s", strings.Join(oc, ", "))
	relRow(t, "kill -9 at random points, remount ovlfs+kernel", kills, survived, kills-survived,
		fmt.Sprintf("%d with a half-built object in the scratch dir; in flight: %s", scratchBusy, strings.Join(fl, ", ")))
}

// relJudge tells whether got is the state before the op in flight, after it,
// or (a write in flight) before it plus a prefix of the written data. It
// reports an error otherwise.
func relJudge(t *testing.T, who string, got, before, after map[string]string, flight *relOp) string {
	t.Helper()
	db := relDiffState(got, before)
	if len(db) == 0 {
		return "before"
	}
	if len(relDiffState(got, after)) == 0 {
		return "after"
	}
	if flight != nil && (flight.Kind == "writebig" || flight.Kind == "create") {
		want := relContent(flight.Seed, max(int(flight.Size), flight.Length))
		if g, ok := got[flight.Path]; ok {
			var mode uint32
			var size int
			var sha string
			if _, err := fmt.Sscanf(g, "f %o %d %s", &mode, &size, &sha); err == nil && size <= len(want) && sha == relSha(want[:size]) {
				b := map[string]string{}
				for k, v := range before {
					b[k] = v
				}
				b[flight.Path] = g
				if len(relDiffState(got, b)) == 0 {
					return "partial write"
				}
			}
		}
	}
	da := relDiffState(got, after)
	fl := "none"
	if flight != nil {
		fl = fmt.Sprintf("%+v", *flight)
	}
	t.Errorf("%s after the crash: neither the state before the op in flight (%s) nor after it.\nvs before:\n  %s\nvs after:\n  %s",
		who, fl, strings.Join(db[:min(len(db), 15)], "\n  "), strings.Join(da[:min(len(da), 15)], "\n  "))
	return "WRONG"
}
