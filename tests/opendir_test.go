package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenDirRemoved: fstat of a directory open while it is removed or renamed
// over still answers with that directory's attributes, as on the kernel overlay
// (and any disk filesystem), for a lower-only, a merged and an upper-only
// directory. Each directory has its own mode, so the answer says which one
// was stat'ed.
func TestOpenDirRemoved(t *testing.T) {
	fill := func(l string) {
		mkdirMode(t, filepath.Join(l, "lo"), 0o751)
		mkdirMode(t, filepath.Join(l, "me"), 0o753)
		mkdirMode(t, filepath.Join(l, "dst"), 0o755)
		mkdirMode(t, filepath.Join(l, "keep"), 0o757)
	}
	// run opens each directory, removes it (or renames another over it) and
	// reports what fstat of the open fd answers.
	run := func(m string) map[string]string {
		J := func(p string) string { return filepath.Join(m, p) }
		wrMust(t, "mkdir me/sub", os.Mkdir(J("me/sub"), 0o700)) // copies me up: merged
		wrMust(t, "rmdir me/sub", os.Remove(J("me/sub")))
		wrMust(t, "mkdir up", os.Mkdir(J("up"), 0o700))
		wrMust(t, "chmod up", os.Chmod(J("up"), 0o715))
		wrMust(t, "mkdir src", os.Mkdir(J("src"), 0o700))
		wrMust(t, "chmod src", os.Chmod(J("src"), 0o705))
		fds := map[string]int{}
		for _, d := range []string{"lo", "me", "up", "dst", "keep"} {
			fd, err := unix.Open(J(d), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			wrMust(t, "open "+d, err)
			fds[d] = fd
		}
		defer func() {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}()
		for _, d := range []string{"lo", "me", "up"} {
			wrMust(t, "rmdir "+d, unix.Rmdir(J(d)))
		}
		wrMust(t, "rename src dst", unix.Rename(J("src"), J("dst")))
		got := map[string]string{}
		for d, fd := range fds {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				got[d] = "fstat: " + errName(err)
				continue
			}
			got[d] = fmt.Sprintf("%s %#o", fileType(st.Mode), st.Mode&0o7777)
		}
		// The name now shows the directory renamed there.
		var st unix.Stat_t
		if err := unix.Stat(J("dst"), &st); err != nil {
			got["dst (name)"] = "stat: " + errName(err)
		} else {
			got["dst (name)"] = fmt.Sprintf("%s %#o", fileType(st.Mode), st.Mode&0o7777)
		}
		return got
	}

	l, u, w := wrLayers(t, fill)
	got := run(mountOvlfs(t, []string{l}, u, w))
	l, u, w = wrLayers(t, fill)
	want := run(mountKernel(t, []string{l}, u, w))
	for d, k := range want {
		if got[d] != k {
			t.Errorf("%s: ovlfs %q, kernel overlay %q", d, got[d], k)
		}
	}
	if want["lo"] != "dir 0751" || want["dst"] != "dir 0755" || want["dst (name)"] != "dir 0705" {
		t.Errorf("the kernel overlay answered %v, not what this test expects of it", want)
	}
}
