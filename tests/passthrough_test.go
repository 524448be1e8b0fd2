package tests

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestLowerPassthrough: as root on Linux 6.9+, big lower files are read by
// FUSE passthrough (no READ reaches the daemon) and small ones from the page
// cache (read twice, one READ). A lower file being read by passthrough can
// still be appended to, truncated by path, opened with O_TRUNC, and written
// while others open and read it: every change lands in the upper layer as the
// kernel overlay then shows it, and every open made after it sees it. Opens
// made before a change keep reading the lower file (README: Limits).
func TestLowerPassthrough(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("FUSE passthrough needs root")
	}
	rnd := rand.New(rand.NewSource(7))
	data := map[string][]byte{}
	for _, name := range []string{"big", "append", "truncate", "otrunc", "busy"} {
		b := make([]byte, 1<<20)
		rnd.Read(b)
		data[name] = b
	}
	data["small"] = []byte(strings.Repeat("s", 100))
	l, u, w := wrLayers(t, func(l string) {
		for name, b := range data {
			writeFile(t, filepath.Join(l, name), b, 0o644)
		}
	})
	mnt, trace := mountTraced(t, []string{l}, u, w)
	if !strings.Contains(readTrace(t, trace), "PASSTHROUGH") {
		t.Skip("the kernel does not offer FUSE passthrough (Linux < 6.9)")
	}
	p := func(name string) string { return filepath.Join(mnt, name) }
	reads := func() int { return traceRequests(t, trace)["READ"] }
	mustRead := func(name string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(p(name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes, not the %d expected", name, len(got), len(want))
		}
	}

	before := reads()
	mustRead("big", data["big"])
	if n := reads() - before; n != 0 {
		t.Errorf("reading a 1 MiB lower file sent %d READ requests; want 0 (passthrough)", n)
	}
	before = reads()
	mustRead("small", data["small"])
	mustRead("small", data["small"])
	if n := reads() - before; n != 1 {
		t.Errorf("reading a 100-byte lower file twice sent %d READ requests; want 1 (page cache)", n)
	}

	// Each change is made while a read-only open of the lower file is
	// being passed through.
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	held := func(name string) *os.File {
		t.Helper()
		f, err := os.Open(p(name))
		if err != nil {
			t.Fatal(err)
		}
		opened = append(opened, f)
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		return f
	}
	stillLower := func(f *os.File, name string) {
		t.Helper()
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 1<<19); err != nil || !bytes.Equal(buf, data[name][1<<19:1<<19+4096]) {
			t.Errorf("%s: an open from before the change no longer reads the lower file (%v)", name, err)
		}
	}
	want := map[string][]byte{"big": data["big"], "small": data["small"]}

	f := held("append")
	af, err := os.OpenFile(p("append"), os.O_WRONLY|os.O_APPEND, 0)
	wrMust(t, "open append O_APPEND while it is read", err)
	_, err = af.Write([]byte("tail"))
	wrMust(t, "append", err)
	wrMust(t, "close", af.Close())
	want["append"] = append(bytes.Clone(data["append"]), "tail"...)
	mustRead("append", want["append"])
	stillLower(f, "append")

	f = held("truncate")
	wrMust(t, "truncate while it is read", os.Truncate(p("truncate"), 1000))
	want["truncate"] = data["truncate"][:1000]
	mustRead("truncate", want["truncate"])
	stillLower(f, "truncate")

	f = held("otrunc")
	wrMust(t, "O_TRUNC while it is read", os.WriteFile(p("otrunc"), []byte("new"), 0o644))
	want["otrunc"] = []byte("new")
	mustRead("otrunc", want["otrunc"])
	stillLower(f, "otrunc")

	// Readers open and read the file while a writer appends to it: no open,
	// read or write fails, every read is a prefix of the final content, and
	// the final content is the lower file plus every append.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	stop := make(chan struct{})
	type read struct {
		n   int
		sum uint32
	}
	var mu sync.Mutex
	var seen []read
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(p("busy"))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				seen = append(seen, read{len(b), crc32.ChecksumIEEE(b)})
				mu.Unlock()
			}
		}()
	}
	final := bytes.Clone(data["busy"])
	for i := 0; i < 50; i++ {
		line := fmt.Sprintf("line %d\n", i)
		af, err := os.OpenFile(p("busy"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			errs <- fmt.Errorf("append %d: %v", i, err)
			break
		}
		if _, err := af.Write([]byte(line)); err != nil {
			errs <- fmt.Errorf("append %d: %v", i, err)
		}
		af.Close()
		final = append(final, line...)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("busy file: %v", err)
	}
	want["busy"] = final
	mustRead("busy", final)
	for _, r := range seen {
		if r.n > len(final) || crc32.ChecksumIEEE(final[:r.n]) != r.sum {
			t.Errorf("busy file: a reader read %d bytes that are not a prefix of what was written", r.n)
			break
		}
	}
	t.Logf("busy file: %d reads during 50 appends", len(seen))

	// The upper layer holds what the mount showed, as the kernel overlay
	// shows it; the lower layer is unchanged.
	for _, f := range opened {
		f.Close()
	}
	opened = nil
	unmountFuse(t, mnt)
	kmnt := mountKernel(t, []string{l}, u, w)
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(kmnt, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("kernel overlay: %s is %d bytes (%v), not the %d ovlfs showed", name, len(got), err, len(b))
		}
	}
	for name, b := range data {
		if got, err := os.ReadFile(filepath.Join(l, name)); err != nil || !bytes.Equal(got, b) {
			t.Errorf("lower %s changed", name)
		}
	}
}
