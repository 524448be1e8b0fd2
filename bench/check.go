package main

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
)

// checkViews mounts every dataset the workloads use on every target and
// compares the merged views (names, types, modes, owners, sizes, symlink
// targets, contents of files up to 16 KiB) with the kernel overlay's. A
// difference is reported, in the table's notes too; the timing goes on.
func (b *bench) checkViews(ws []*workload) {
	ref := b.targets[0]
	for _, t := range b.targets {
		if t == kernel {
			ref = t
		}
	}
	done := map[string]bool{}
	for _, w := range ws {
		if done[w.data] || b.ctx.Err() != nil {
			continue
		}
		done[w.data] = true
		views := map[string]map[string]string{}
		for _, t := range b.targets {
			m, err := b.mountData(t, datasets[w.data])
			if err != nil {
				b.viewProblem("%s on %s: %v", w.data, t, err)
				continue
			}
			views[t], err = snapshot(m.mnt)
			b.unmount(m)
			if err != nil {
				b.viewProblem("%s on %s: walk: %v", w.data, t, err)
			}
		}
		want := views[ref]
		same := len(views) == len(b.targets)
		for _, t := range b.targets {
			if t == ref || views[t] == nil || want == nil {
				continue
			}
			if d := diffViews(want, views[t]); len(d) > 0 {
				same = false
				b.viewProblem("%s: %s shows %d entries unlike %s, e.g. %v", w.data, t, len(d), ref, d[:min(len(d), 3)])
			}
		}
		if same {
			logf("view check %s: all %d targets show the same %d entries", w.data, len(views), len(want))
		}
	}
}

func (b *bench) viewProblem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	logf("view check: %s", msg)
	b.views = append(b.views, msg)
}

// snapshot describes every entry below root, by relative path.
func snapshot(root string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("%o %d:%d", st.Mode, st.Uid, st.Gid)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case syscall.S_IFREG:
			desc += fmt.Sprintf(" %d bytes", st.Size)
			if st.Size <= 16<<10 {
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				desc += fmt.Sprintf(" crc %08x", crc32.ChecksumIEEE(data))
			}
		case syscall.S_IFCHR, syscall.S_IFBLK:
			desc += fmt.Sprintf(" dev %x", st.Rdev)
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = desc
		return nil
	})
	return out, err
}

// diffViews lists the paths whose entries differ, sorted.
func diffViews(want, got map[string]string) []string {
	var d []string
	for p, w := range want {
		if g, ok := got[p]; !ok {
			d = append(d, p+": missing")
		} else if g != w {
			d = append(d, fmt.Sprintf("%s: %s, not %s", p, g, w))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			d = append(d, p+": extra")
		}
	}
	sort.Strings(d)
	return d
}

// lstatMain is the helper the lstat workloads run: `ovlbench lstat
// [-missing] LIST` lstats every path of LIST (relative to the current
// directory) and fails at the first one that does not exist (with -missing:
// that does).
func lstatMain(args []string) int {
	missing := len(args) > 0 && args[0] == "-missing"
	if missing {
		args = args[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: ovlbench lstat [-missing] LIST")
		return 2
	}
	f, err := os.Open(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var st syscall.Stat_t
		err := syscall.Lstat(sc.Text(), &st)
		switch {
		case missing && err == nil:
			err = errors.New("exists")
		case missing && err == syscall.ENOENT:
			err = nil
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "lstat %s: %v\n", sc.Text(), err)
			return 1
		}
		n++
	}
	if n == 0 {
		fmt.Fprintln(os.Stderr, "lstat: empty list")
		return 1
	}
	return 0
}

func runQuiet(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, out)
	}
	return nil
}
