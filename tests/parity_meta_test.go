package tests

// What ovlfs writes into the upper is what the kernel overlay writes after
// the same operations: overlay.opaque only where a directory replaces a
// whiteout or may hide a lower one, overlay.impure on a directory once it holds a copied-up or
// moved-in entry, redirects, whiteouts (values compared, except origin file
// handles and the uuid, which are unique to each mount).

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// upperMetaValues lists the overlay xattrs (with values where they are
// comparable) and whiteouts of an upper.
func upperMetaValues(t *testing.T, u string) string {
	var out []string
	filepath.Walk(u, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(u, p)
		names, _ := listXattrs(p, func(n string) bool { return strings.Contains(n, ".overlay.") })
		sort.Strings(names)
		for _, n := range names {
			// listXattrs gives name=value; origin handles and the uuid
			// are unique to each mount.
			if k, _, _ := strings.Cut(n, "="); strings.HasSuffix(k, ".origin") || strings.HasSuffix(k, ".uuid") {
				n = k
			}
			out = append(out, rel+" "+n)
		}
		if wrIsWhiteout(p) {
			out = append(out, rel+" whiteout")
		}
		return nil
	})
	return strings.Join(out, "\n")
}

func TestUpperMetadata(t *testing.T) {
	fill := func(l string) {
		mkdirs(t, filepath.Join(l, "a", "sub"))
		writeFile(t, filepath.Join(l, "a", "f"), []byte("f"), 0o644)
		writeFile(t, filepath.Join(l, "a", "sub", "g"), []byte("g"), 0o644)
		mkdirs(t, filepath.Join(l, "b"))
		writeFile(t, filepath.Join(l, "top"), []byte("t"), 0o644)
		mkdirs(t, filepath.Join(l, "gone"))
	}
	cases := []struct {
		name string
		ops  func(m string) error
	}{
		{"mkdir with nothing below", func(m string) error { return os.Mkdir(filepath.Join(m, "new"), 0o755) }},
		{"mkdir in a merged dir", func(m string) error { return os.Mkdir(filepath.Join(m, "a", "new"), 0o755) }},
		{"chmod of a lower dir", func(m string) error { return os.Chmod(filepath.Join(m, "a"), 0o700) }},
		{"append to a lower file", func(m string) error {
			return os.WriteFile(filepath.Join(m, "a", "sub", "g"), []byte("more"), 0o644)
		}},
		{"rmdir and mkdir again", func(m string) error {
			if err := os.Remove(filepath.Join(m, "gone")); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(m, "gone"), 0o755)
		}},
		{"rm file and mkdir there", func(m string) error {
			if err := os.Remove(filepath.Join(m, "top")); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(m, "top"), 0o755)
		}},
		{"rename a merged dir in place", func(m string) error {
			return os.Rename(filepath.Join(m, "a"), filepath.Join(m, "a2"))
		}},
		{"rename a merged dir twice, then elsewhere", func(m string) error {
			for _, mv := range [][2]string{{"a", "a2"}, {"a2", "a3"}, {"a3", "b/a4"}} {
				if err := os.Rename(filepath.Join(m, mv[0]), filepath.Join(m, mv[1])); err != nil {
					return err
				}
			}
			return nil
		}},
		{"rename a merged dir elsewhere", func(m string) error {
			return os.Rename(filepath.Join(m, "a", "sub"), filepath.Join(m, "b", "sub2"))
		}},
		{"move a copied-up file to a new dir", func(m string) error {
			if err := os.WriteFile(filepath.Join(m, "a", "f"), []byte("x"), 0o644); err != nil {
				return err
			}
			if err := os.Mkdir(filepath.Join(m, "n"), 0o755); err != nil {
				return err
			}
			return os.Rename(filepath.Join(m, "a", "f"), filepath.Join(m, "n", "f"))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run := func(mount func(l, u, w string) string) string {
				l, u, w := wrLayers(t, fill)
				m := mount(l, u, w)
				wrMust(t, c.name, c.ops(m))
				return upperMetaValues(t, u)
			}
			ov := run(func(l, u, w string) string { return mountOvlfs(t, []string{l}, u, w) })
			kern := run(func(l, u, w string) string {
				return mountKernel(t, []string{l}, u, w, wrKernelOpts()...)
			})
			if ov != kern {
				t.Errorf("upper after %s:\novlfs:\n%s\nkernel overlay:\n%s", c.name, ov, kern)
			}
		})
	}
}
