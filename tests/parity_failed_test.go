package tests

// A failed operation leaves the layers exactly as they were: each operation
// below fails on the kernel overlay; ovlfs must fail it with the same errno
// and leave the upper untouched (no copied-up parent, no stray object).

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// upperState is every path of an upper with its type, mode and overlay
// xattrs, as one comparable string.
func upperState(t *testing.T, u string) string {
	var b strings.Builder
	filepath.Walk(u, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(u, p)
		if rel == "." {
			rel = "/"
		}
		names, _ := listXattrs(p, func(string) bool { return true })
		b.WriteString(rel + " " + fi.Mode().String() + " " + strings.Join(names, ",") + "\n")
		return nil
	})
	return b.String()
}

func TestFailedOpsLeaveUpper(t *testing.T) {
	fill := func(l string) {
		mkdirs(t, filepath.Join(l, "d", "full"))
		writeFile(t, filepath.Join(l, "d", "f"), []byte("f"), 0o644)
		writeFile(t, filepath.Join(l, "d", "full", "x"), []byte("x"), 0o644)
	}
	ops := []struct {
		name string
		op   func(m string) error
	}{
		{"mknod 0/0 char device", func(m string) error {
			return unix.Mknod(filepath.Join(m, "d", "wh"), unix.S_IFCHR|0o644, 0)
		}},
		{"mkdir over a file", func(m string) error { return unix.Mkdir(filepath.Join(m, "d", "f"), 0o755) }},
		{"rmdir of a non-empty dir", func(m string) error { return unix.Rmdir(filepath.Join(m, "d", "full")) }},
		{"rename a dir over a non-empty one", func(m string) error {
			return unix.Rename(filepath.Join(m, "d"), filepath.Join(m, "d", "full"))
		}},
		{"unlink of a missing name", func(m string) error { return unix.Unlink(filepath.Join(m, "d", "nope")) }},
		{"link to a missing file", func(m string) error {
			return unix.Link(filepath.Join(m, "d", "nope"), filepath.Join(m, "d", "l"))
		}},
		{"rename onto a dir from a file", func(m string) error {
			return unix.Rename(filepath.Join(m, "d", "f"), filepath.Join(m, "d", "full"))
		}},
	}
	for _, c := range ops {
		t.Run(c.name, func(t *testing.T) {
			type res struct{ Err, Upper string }
			run := func(l, m string) res { return res{Err: errOK(c.op(m))} }
			l, u, w := wrLayers(t, fill)
			m := mountOvlfs(t, []string{l}, u, w)
			before := upperState(t, u) // after the mount's own X(uuid)
			ov := run(l, m)
			ov.Upper = upperState(t, u)
			l, u2, w2 := wrLayers(t, fill)
			kern := run(l, mountKernel(t, []string{l}, u2, w2))
			if ov.Err != kern.Err {
				t.Errorf("%s: ovlfs %s, kernel overlay %s", c.name, ov.Err, kern.Err)
			}
			if ov.Upper != before {
				t.Errorf("%s changed the upper:\nbefore:\n%s\nafter:\n%s", c.name, before, ov.Upper)
			}
		})
	}
}
