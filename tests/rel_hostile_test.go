package tests

// TestRelHostile: layers that try to lead the daemon out of the layer dirs.
// A sentinel dir sits next to the layers (symlinks in the layers point at
// it); it is hashed (content, mode, mtime, ctime, xattrs) before and after,
// and fanotify watches it in between: any open, read or write of it, by any
// process, is an escape. The test itself never follows a symlink: it walks
// the merged view with openat2(RESOLVE_NO_SYMLINKS|RESOLVE_BENEATH), so
// every access to the sentinel could only come from the daemon.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// relWatch reports every fanotify event on the watched dirs (and their
// direct children).
type relWatch struct {
	fd     int
	mu     sync.Mutex
	events []string
	stop   chan struct{}
	done   chan struct{}
}

func relStartWatch(t *testing.T, dirs []string) *relWatch {
	t.Helper()
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE)
	if err != nil {
		t.Skipf("SKIP: fanotify_init: %v", err)
	}
	for _, d := range dirs {
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD,
			unix.FAN_OPEN|unix.FAN_ACCESS|unix.FAN_MODIFY|unix.FAN_CLOSE_WRITE|unix.FAN_EVENT_ON_CHILD|unix.FAN_ONDIR,
			unix.AT_FDCWD, d); err != nil {
			unix.Close(fd)
			t.Fatalf("fanotify_mark %s: %v", d, err)
		}
	}
	w := &relWatch{fd: fd, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.Read(fd, buf)
			if err == unix.EAGAIN || n <= 0 {
				select {
				case <-w.stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
			for off := 0; off+int(unsafe.Sizeof(unix.FanotifyEventMetadata{})) <= n; {
				m := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
				if m.Event_len == 0 {
					break
				}
				path := "?"
				if m.Fd >= 0 {
					path, _ = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", m.Fd))
					unix.Close(int(m.Fd))
				}
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", m.Pid))
				w.mu.Lock()
				w.events = append(w.events, fmt.Sprintf("pid %d (%s) mask %#x on %s", m.Pid, bytes.TrimSpace(comm), m.Mask, path))
				w.mu.Unlock()
				off += int(m.Event_len)
			}
		}
	}()
	return w
}

func (w *relWatch) Events() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.events...)
}

func (w *relWatch) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = nil
}

func (w *relWatch) Stop() []string {
	close(w.stop)
	<-w.done
	unix.Close(w.fd)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events
}

// relOpenBeneath opens rel below the dir fd root without following any symlink.
func relOpenBeneath(root int, rel string, flags int, mode uint32) (int, error) {
	return unix.Openat2(root, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH,
	})
}

// relList lists dir rel below root (no symlinks followed).
func relList(root int, rel string) ([]string, error) {
	fd, err := relOpenBeneath(root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	return f.Readdirnames(-1)
}

func relReadBeneath(root int, rel string) ([]byte, error) {
	fd, err := relOpenBeneath(root, rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}

// relCreateBeneath creates (O_EXCL) rel below root and writes data.
func relCreateBeneath(root int, rel string, data []byte) error {
	dfd, err := relOpenBeneath(root, filepath.Dir(rel), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, filepath.Base(rel), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	_, err = unix.Write(fd, data)
	unix.Close(fd)
	return err
}

// relAtParent runs fn on the parent dir fd of rel (opened without symlinks).
func relAtParent(root int, rel string, fn func(dfd int, name string) error) error {
	dfd, err := relOpenBeneath(root, filepath.Dir(rel), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return fn(dfd, filepath.Base(rel))
}

var relSentinelNames = []string{"SENTINEL-secret", "SENTINEL-sub", "SENTINEL-wdir", "SENTINEL-inner"}

// relLeaks reports sentinel names in a listing, or the sentinel content in data.
func relLeaks(names []string, data []byte) error {
	for _, n := range names {
		for _, s := range relSentinelNames {
			if n == s {
				return fmt.Errorf("listing shows the sentinel's %q", n)
			}
		}
	}
	if bytes.Contains(data, []byte("SENTINEL-DATA")) {
		return errors.New("read returned the sentinel's data")
	}
	return nil
}

func TestRelHostile(t *testing.T) {
	relRequire(t)
	dir := t.TempDir()
	sent := filepath.Join(dir, "sentinel")
	writeFile(t, filepath.Join(sent, "SENTINEL-secret"), []byte("SENTINEL-DATA secret"), 0o644)
	writeFile(t, filepath.Join(sent, "SENTINEL-sub", "SENTINEL-inner"), []byte("SENTINEL-DATA inner"), 0o644)
	mkdirMode(t, filepath.Join(sent, "SENTINEL-wdir"), 0o777)
	setXattr(t, filepath.Join(sent, "SENTINEL-secret"), "user.sentinel", []byte("SENTINEL-DATA"))

	lower := filepath.Join(dir, "lower")
	lower2 := filepath.Join(dir, "low\ner2") // a layer path with a newline
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	mkdirs(t, lower2)
	mkdirs(t, upper)
	mkdirs(t, work)
	writeFile(t, filepath.Join(lower2, "from-lower2"), []byte("l2"), 0o644)
	// Symlinks out of the lower layer.
	symlink(t, sent, filepath.Join(lower, "abs-esc"))
	symlink(t, "../sentinel", filepath.Join(lower, "rel-esc"))
	symlink(t, "../../sentinel/SENTINEL-secret", filepath.Join(lower, "deep", "rel-esc2"))
	symlink(t, "/../../../../../../"+sent, filepath.Join(lower, "dotdot-abs"))
	// Dirs to be swapped for symlinks while mounted.
	writeFile(t, filepath.Join(lower, "swap", "f"), []byte("lower swap f"), 0o644)
	writeFile(t, filepath.Join(lower, "swapcold", "f"), []byte("lower swapcold f"), 0o644)
	writeFile(t, filepath.Join(upper, "uswap", "f"), []byte("upper uswap f"), 0o644)
	writeFile(t, filepath.Join(lower, "uswap", "g"), []byte("lower uswap g"), 0o644)
	// An upper symlink out, over a lower dir of the same name.
	writeFile(t, filepath.Join(lower, "uesc", "f"), []byte("lower uesc f"), 0o644)
	symlink(t, sent, filepath.Join(upper, "uesc"))
	// Redirects that try to leave the root (upper dirs merged with nothing).
	badRedirects := map[string][]byte{
		"r-dotdot":       []byte("../sentinel"),
		"r-abs-dotdot":   []byte("/../sentinel"),
		"r-abs-dotdot2":  []byte("/../../../../../../../" + strings.TrimPrefix(sent, "/")),
		"r-hostpath":     []byte(sent),
		"r-mid-dotdot":   []byte("/deep/../../sentinel"),
		"r-dot":          []byte("."),
		"r-dotdot-only":  []byte(".."),
		"r-through-sym":  []byte("/abs-esc"),
		"r-through-sym2": []byte("/rel-esc/SENTINEL-sub"),
		"r-binary":       {0xff, 0, '/', '.', '.', 0, 0xfe},
		"r-long":         []byte("/" + strings.Repeat("a/", 1900)),
		"r-empty":        {},
	}
	for name, v := range badRedirects {
		mkdirs(t, filepath.Join(upper, name))
		writeFile(t, filepath.Join(upper, name, "own"), []byte("own"), 0o644)
		setXattr(t, filepath.Join(upper, name), "trusted.overlay.redirect", v)
	}
	// Metacopy files whose data would come from outside.
	writeFile(t, filepath.Join(lower, "mc"), []byte("lower mc"), 0o644)
	for name, v := range map[string]string{"mc": "/../sentinel/SENTINEL-secret", "mc-sym": "/abs-esc/SENTINEL-secret", "mc-rel": "/rel-esc/SENTINEL-secret", "mc-host": sent + "/SENTINEL-secret"} {
		writeFile(t, filepath.Join(upper, name), nil, 0o644)
		unix.Truncate(filepath.Join(upper, name), 20)
		setXattr(t, filepath.Join(upper, name), "trusted.overlay.metacopy", nil)
		setXattr(t, filepath.Join(upper, name), "trusted.overlay.redirect", []byte(v))
	}
	// Garbage overlay metadata and awkward xattr values.
	mkdirs(t, filepath.Join(lower, "garbage"))
	writeFile(t, filepath.Join(lower, "garbage", "f"), []byte("g"), 0o644)
	for k, v := range map[string][]byte{
		"trusted.overlay.opaque": {0, 0xff, 'y'}, "trusted.overlay.origin": bytes.Repeat([]byte{0xfb}, 300),
		"trusted.overlay.impure": {0xff}, "trusted.overlay.nlink": []byte("-99999999999"),
		"trusted.overlay.upper": {0}, "trusted.overlay.metacopy": {1, 2, 3},
	} {
		setXattr(t, filepath.Join(lower, "garbage"), k, v)
	}
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	long := bytes.Repeat([]byte{0, 0xff, '\n'}, 1000)
	xname := "user." + strings.Repeat("x", 249) // 255 bytes, the limit
	writeFile(t, filepath.Join(lower, "xattrs"), []byte("x"), 0o644)
	setXattr(t, filepath.Join(lower, "xattrs"), "user.bin", bin)
	setXattr(t, filepath.Join(lower, "xattrs"), "user.long", long)
	setXattr(t, filepath.Join(lower, "xattrs"), xname, []byte("n"))
	// Names with newlines (and one that looks like a whiteout marker after it).
	writeFile(t, filepath.Join(lower, "nl\nfile"), []byte("nl"), 0o644)
	writeFile(t, filepath.Join(lower, "nl\ndir", "in\nside"), []byte("nl2"), 0o644)
	writeFile(t, filepath.Join(lower, "x\n.wh.y"), []byte("nl3"), 0o644)

	sentBefore := relDiskState(sent, true)
	lowerBefore := relDiskState(lower, true)
	watch := relStartWatch(t, []string{sent, filepath.Join(sent, "SENTINEL-sub"), filepath.Join(sent, "SENTINEL-wdir")})
	watchDone := false
	// Calibrate: the watch must see our own read of the sentinel.
	os.ReadFile(filepath.Join(sent, "SENTINEL-secret"))
	for i := 0; i < 200 && len(watch.Events()) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if len(watch.Events()) == 0 {
		t.Fatal("fanotify saw no event for a read of the sentinel: the watch does not work")
	}
	time.Sleep(300 * time.Millisecond) // the read's ACCESS event may come after its OPEN
	watch.Reset()
	defer func() {
		if !watchDone {
			watch.Stop()
		}
	}()

	tried, contained := 0, 0
	var failures []string
	var mnt string
	var root int
	var daemon int
	cases := []struct {
		name string
		fn   func() error
	}{
		{"lower symlinks out (absolute, .., deep ..): readlink, lchown copy-up, no follow", func() error {
			for name, want := range map[string]string{"abs-esc": sent, "rel-esc": "../sentinel", "deep/rel-esc2": "../../sentinel/SENTINEL-secret", "dotdot-abs": "/../../../../../../" + sent} {
				got, err := os.Readlink(filepath.Join(mnt, name))
				if err != nil || got != want {
					return fmt.Errorf("readlink %s: %q %v, want %q", name, got, err, want)
				}
				if _, err := relOpenBeneath(root, name, unix.O_RDONLY, 0); !errors.Is(err, unix.ELOOP) {
					return fmt.Errorf("%s opened without following: %v", name, err)
				}
				if err := unix.Lchown(filepath.Join(mnt, name), 1, 1); err != nil {
					return fmt.Errorf("lchown %s: %v", name, err)
				}
				if got, err := os.Readlink(filepath.Join(upper, name)); err != nil || got != want {
					return fmt.Errorf("copied-up symlink %s: %q %v", name, got, err)
				}
			}
			return nil
		}},
		{"upper symlink out over a lower dir: no merge, no create through it", func() error {
			if got, err := os.Readlink(filepath.Join(mnt, "uesc")); err != nil || got != sent {
				return fmt.Errorf("readlink uesc: %q %v", got, err)
			}
			if err := relCreateBeneath(root, "uesc/new", []byte("x")); err == nil {
				return errors.New("created uesc/new through the symlink")
			}
			return nil
		}},
		{"lower dir swapped for a symlink out while mounted (after lookup)", func() error {
			names, err := relList(root, "swap")
			if err != nil || len(names) != 1 {
				return fmt.Errorf("list swap before: %v %v", names, err)
			}
			if err := os.Rename(filepath.Join(lower, "swap"), filepath.Join(lower, "swap.old")); err != nil {
				return err
			}
			if err := os.Symlink(sent, filepath.Join(lower, "swap")); err != nil {
				return err
			}
			return relPoke(root, "swap", "f")
		}},
		{"lower dir swapped for a symlink out before any lookup", func() error {
			if err := os.Rename(filepath.Join(lower, "swapcold"), filepath.Join(lower, "swapcold.old")); err != nil {
				return err
			}
			if err := os.Symlink("../sentinel", filepath.Join(lower, "swapcold")); err != nil {
				return err
			}
			return relPoke(root, "swapcold", "f")
		}},
		{"upper dir swapped for a symlink out while mounted", func() error {
			names, err := relList(root, "uswap")
			if err != nil || len(names) != 2 {
				return fmt.Errorf("list uswap before: %v %v", names, err)
			}
			if err := os.Rename(filepath.Join(upper, "uswap"), filepath.Join(dir, "uswap.moved")); err != nil {
				return err
			}
			if err := os.Symlink(filepath.Join(sent, "SENTINEL-wdir"), filepath.Join(upper, "uswap")); err != nil {
				return err
			}
			return relPoke(root, "uswap", "f")
		}},
		{"redirects with .., absolute, host paths, through symlinks, binary, long, empty", func() error {
			for name := range badRedirects {
				names, err := relList(root, name)
				if err := relLeaks(names, nil); err != nil {
					return fmt.Errorf("%s: %v", name, err)
				}
				if err == nil && len(names) != 1 {
					return fmt.Errorf("%s lists %q, want only its own file", name, names)
				}
				if err := relCreateBeneath(root, name+"/made", []byte("m")); err != nil && !errors.Is(err, unix.EIO) && !errors.Is(err, unix.EPERM) {
					return fmt.Errorf("%s: create inside: %v", name, err)
				}
			}
			return nil
		}},
		{"metacopy files redirected outside (.., through symlinks, host path)", func() error {
			for _, name := range []string{"mc", "mc-sym", "mc-rel", "mc-host"} {
				data, err := relReadBeneath(root, name)
				if err := relLeaks(nil, data); err != nil {
					return fmt.Errorf("%s: %v", name, err)
				}
				_ = err
			}
			return nil
		}},
		{"garbage overlay xattrs on a lower dir: served, copied up, not opaque", func() error {
			names, err := relList(root, "garbage")
			if err != nil || len(names) != 1 {
				return fmt.Errorf("list garbage: %v %v", names, err)
			}
			if err := relCreateBeneath(root, "garbage/new", []byte("n")); err != nil {
				return fmt.Errorf("create in garbage: %v", err)
			}
			return nil
		}},
		{"binary, 3000-byte and 255-byte-name xattrs: read back exact, copied up exact", func() error {
			p := filepath.Join(mnt, "xattrs")
			for k, want := range map[string][]byte{"user.bin": bin, "user.long": long, xname: []byte("n")} {
				got, err := getXattr(p, k)
				if err != nil || !bytes.Equal(got, want) {
					return fmt.Errorf("getxattr %s: %d bytes %v", k, len(got), err)
				}
			}
			if err := unix.Chmod(p, 0o600); err != nil {
				return err
			}
			for k, want := range map[string][]byte{"user.bin": bin, "user.long": long, xname: []byte("n")} {
				got, err := getXattr(filepath.Join(upper, "xattrs"), k)
				if err != nil || !bytes.Equal(got, want) {
					return fmt.Errorf("copied-up %s: %d bytes %v", k, len(got), err)
				}
			}
			if err := unix.Setxattr(p, "user.toolong", make([]byte, 70000), 0); err == nil {
				return errors.New("a 70000-byte xattr value was accepted")
			}
			return nil
		}},
		{"names with newlines: listed, read, renamed, copied up", func() error {
			names, err := relList(root, ".")
			if err != nil {
				return err
			}
			found := 0
			for _, n := range names {
				if n == "nl\nfile" || n == "nl\ndir" || n == "x\n.wh.y" {
					found++
				}
			}
			if found != 3 {
				return fmt.Errorf("root lists %q", names)
			}
			if d, err := relReadBeneath(root, "nl\ndir/in\nside"); err != nil || string(d) != "nl2" {
				return fmt.Errorf("read nl: %q %v", d, err)
			}
			if err := os.Rename(filepath.Join(mnt, "nl\nfile"), filepath.Join(mnt, "nl\ndir", "moved\n")); err != nil {
				return err
			}
			if d, err := os.ReadFile(filepath.Join(upper, "nl\ndir", "moved\n")); err != nil || string(d) != "nl" {
				return fmt.Errorf("renamed file in upper: %q %v", d, err)
			}
			return nil
		}},
		{"the daemon is still alive", func() error {
			if !processAlive(daemon) {
				return errors.New("the daemon died")
			}
			return nil
		}},
	}
	t.Run("mount", func(t *testing.T) {
		mnt = mountOvlfs(t, []string{lower, lower2}, upper, work, "timeout=0")
		daemon = relDaemon(t, mnt)
		fd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		root = fd
		defer unix.Close(root)
		if d, err := relReadBeneath(root, "from-lower2"); err != nil || string(d) != "l2" {
			t.Errorf("file from the lower with a newline in its path: %q %v", d, err)
		}
		for _, c := range cases {
			tried++
			if err := c.fn(); err != nil {
				failures = append(failures, c.name+": "+err.Error())
				t.Errorf("%s: %v", c.name, err)
			} else {
				contained++
			}
		}
	})
	// The scratch dir itself hostile: a symlink out, or stale entries that are
	// symlinks out; the mount must refuse or clean them without following.
	for _, c := range []struct {
		name  string
		setup func(work string)
	}{
		{"workdir/ovlfs is a symlink out", func(work string) {
			symlink(t, filepath.Join(sent, "SENTINEL-wdir"), filepath.Join(work, "ovlfs"))
		}},
		{"stale scratch entries are symlinks out", func(work string) {
			mkdirs(t, filepath.Join(work, "ovlfs", "stale-dir"))
			symlink(t, sent, filepath.Join(work, "ovlfs", "stale-link"))
			symlink(t, filepath.Join(sent, "SENTINEL-sub"), filepath.Join(work, "ovlfs", "stale-dir", "deeper"))
		}},
		{"workdir/work (the kernel's) is a symlink out", func(work string) {
			symlink(t, filepath.Join(sent, "SENTINEL-wdir"), filepath.Join(work, "work"))
		}},
	} {
		tried++
		ok := t.Run(c.name, func(t *testing.T) {
			u, w := filepath.Join(dir, "u-"+c.name), filepath.Join(dir, "w-"+c.name)
			mkdirs(t, u)
			mkdirs(t, w)
			c.setup(w)
			m, err := relTryMount(t, []string{filepath.Join(lower, "deep"), lower2}, u, w)
			if err != nil {
				t.Logf("mount refused: %v", err)
				return
			}
			// Copy-ups go through the scratch dir.
			if err := os.WriteFile(filepath.Join(m, "from-lower2"), []byte("changed"), 0o644); err != nil {
				t.Logf("copy-up refused: %v", err)
			}
			if err := os.Mkdir(filepath.Join(m, "newdir"), 0o755); err != nil {
				t.Logf("mkdir refused: %v", err)
			}
		})
		if ok {
			contained++
		} else {
			failures = append(failures, c.name)
		}
	}
	time.Sleep(100 * time.Millisecond)
	watchDone = true
	events := watch.Stop()
	if len(events) > 0 {
		t.Errorf("the sentinel was opened, read or written: %s", strings.Join(events[:min(len(events), 20)], "; "))
	}
	tried++
	if d := relDiffState(relDiskState(sent, true), sentBefore); len(d) > 0 {
		t.Errorf("the sentinel changed: %s", strings.Join(d, "; "))
		failures = append(failures, "sentinel changed")
	} else if len(events) == 0 {
		contained++
	}
	// The lower changed only where the test swapped dirs for symlinks.
	after := relDiskState(lower, true)
	for _, k := range []string{".", "swap", "swap.old", "swapcold", "swapcold.old", "swap/f", "swapcold/f", "swap.old/f", "swapcold.old/f"} {
		delete(after, k)
		delete(lowerBefore, k)
	}
	if d := relDiffState(after, lowerBefore); len(d) > 0 {
		t.Errorf("the lower layer changed: %s", strings.Join(d, "; "))
	}
	relRow(t, "hostile layers contained (sentinel hash+fanotify)", tried, contained, tried-contained,
		fmt.Sprintf("%d sentinel accesses; %d redirect values, 4 metacopy redirects", len(events), len(badRedirects)))
}

// relPoke reads, lists, creates, renames and unlinks in dir below root
// (which may have become a symlink out): every answer is fine except one
// showing or touching the sentinel.
func relPoke(root int, dir, file string) error {
	names, _ := relList(root, dir)
	data, _ := relReadBeneath(root, dir+"/"+file)
	data2, _ := relReadBeneath(root, dir+"/SENTINEL-secret")
	if err := relLeaks(names, append(data, data2...)); err != nil {
		return err
	}
	relCreateBeneath(root, dir+"/new-file", []byte("new"))
	relAtParent(root, dir+"/"+file, func(dfd int, name string) error {
		unix.Renameat(dfd, name, dfd, name+".renamed")
		unix.Mkdirat(dfd, "new-dir", 0o755)
		unix.Fsetxattr(dfd, "user.poke", []byte("p"), 0)
		return unix.Unlinkat(dfd, name+".renamed", 0)
	})
	// chmod through an fd: fchmodat(2) would follow a symlink on the client side.
	if fd, err := relOpenBeneath(root, dir, unix.O_RDONLY|unix.O_DIRECTORY, 0); err == nil {
		unix.Fchmod(fd, 0o700)
		unix.Close(fd)
	}
	return nil
}

// relTryMount mounts ovlfs like mountOvlfs but returns the error instead of
// failing when the mount is refused.
func relTryMount(t *testing.T, lowers []string, upper, work string, extra ...string) (string, error) {
	t.Helper()
	mnt := newMountpoint(t)
	opts := layerOptions(lowers, upper, work)
	for _, e := range extra {
		opts += "," + e
	}
	out, err := relRun(ovlfsBin, "-o", opts, mnt)
	if err != nil {
		if isMounted(mnt) {
			unmountFuse(t, mnt)
		}
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	t.Cleanup(func() { unmountFuse(t, mnt) })
	return mnt, nil
}
