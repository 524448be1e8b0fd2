package tests

// TestRelBadInput: every malformed option and command line gets one
// "ovlfs: ..." line on stderr and exit status 1, nothing is mounted, no
// daemon is left, and the layers are untouched.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRelBadInput(t *testing.T) {
	cliRequire(t)
	s := cliLayers(t)
	lowerState := relDiskState(s.Lower, true)
	o := s.Opts()
	long := strings.Repeat("/x", 60000) // under MAX_ARG_STRLEN (128 KiB)
	cases := [][]string{
		{"-o", "lowerdir=", s.Mnt},
		{"-o", "lowerdir", s.Mnt},
		{"-o", "lowerdir=" + s.Lower + "::" + s.Lower, s.Mnt},
		{"-o", "lowerdir=:" + s.Lower, s.Mnt},
		{"-o", "lowerdir=" + s.Lower + ":", s.Mnt},
		{"-o", "lowerdir=" + s.Lower + ",upperdir=", s.Mnt},
		{"-o", "lowerdir=" + s.Lower + ",upperdir=" + s.Upper + ",workdir", s.Mnt},
		{"-o", o + ",uidmapping=", s.Mnt},
		{"-o", o + ",uidmapping", s.Mnt},
		{"-o", o + ",uidmapping=a:b:c", s.Mnt},
		{"-o", o + ",uidmapping=0:0", s.Mnt},
		{"-o", o + ",uidmapping=0:0:1:2", s.Mnt},
		{"-o", o + ",uidmapping=-1:0:1", s.Mnt},
		{"-o", o + ",uidmapping=0:0:99999999999", s.Mnt},
		{"-o", o + ",gidmapping=0:x:1", s.Mnt},
		{"-o", o + ",squash_to_root=1", s.Mnt},
		{"-o", o + ",squash_to_uid=", s.Mnt},
		{"-o", o + ",squash_to_uid=-1", s.Mnt},
		{"-o", o + ",squash_to_uid=abc", s.Mnt},
		{"-o", o + ",squash_to_gid=4294967296", s.Mnt},
		{"-o", o + ",xattr_permissions=3", s.Mnt},
		{"-o", o + ",xattr_permissions", s.Mnt},
		{"-o", o + ",static_nlink=1", s.Mnt},
		{"-o", o + ",volatile=yes", s.Mnt},
		{"-o", o + ",allow_other=0", s.Mnt},
		{"-o", o + ",default_permissions=1", s.Mnt},
		{"-o", o + ",noxattrs=2", s.Mnt},
		{"-o", o + ",fsync=maybe", s.Mnt},
		{"-o", o + ",threaded=", s.Mnt},
		{"-o", o + ",timeout=", s.Mnt},
		{"-o", o + ",timeout=-1", s.Mnt},
		{"-o", o + ",timeout=nan", s.Mnt},
		{"-o", o + ",timeout=inf", s.Mnt},
		{"-o", o + ",timeout=1e300", s.Mnt},
		{"-o", o + ",timeout=1s", s.Mnt},
		{"-o", o + ",redirect_dir=maybe", s.Mnt},
		{"-o", o + ",xino=sometimes", s.Mnt},
		{"-o", o + ",context=", s.Mnt},
		{"-o", o + ",context", s.Mnt},
		{"-o", "lowerdir=" + long, s.Mnt},
		{"-o", "lowerdir=" + s.Lower + "\n" + s.Lower, s.Mnt},
		{"-o", "lowerdir=" + s.Lower + ",upperdir=" + s.Upper + "\n,workdir=" + s.Work, s.Mnt},
		{"-o", o},
		{"-o", o, ""},
		{"-o", o, "a", "b", s.Mnt},
		{"-o"},
		{"-x", "-o", o, s.Mnt},
		{"--bogus", "-o", o, s.Mnt},
		{"-o", o, s.Mnt + "/nope/deeper"},
		{"-o", "lowerdir=relative/nope", s.Mnt},
		{"-o", "lowerdir=/proc/self/fd/999", s.Mnt},
		{"-o", "lowerdir=/dev/null", s.Mnt},
		{"-o", o, "/dev/null"},
		{"-o", "lowerdir=" + s.Lower + ",upperdir=/proc,workdir=" + s.Work, s.Mnt},
	}
	tried, refused := 0, 0
	for i, args := range cases {
		tried++
		ok := t.Run(fmt.Sprint(i), func(t *testing.T) {
			before, _ := os.ReadFile("/proc/self/mountinfo")
			r := cliMountAndClean(t, s.Mnt, "", args...)
			t.Logf("ovlfs %s: %q", shorten(fmt.Sprintf("%q", args), 200), shorten(r.Stderr, 300))
			cliOneErrorLine(t, r, "")
			after, _ := os.ReadFile("/proc/self/mountinfo")
			if strings.Count(string(after), "\n") != strings.Count(string(before), "\n") {
				t.Errorf("the mount table changed")
			}
			if p := daemonPids(s.Mnt); len(p) > 0 {
				t.Errorf("daemon left: %v", p)
			}
		})
		if ok {
			refused++
		}
	}
	if d := relDiffState(relDiskState(s.Lower, true), lowerState); len(d) > 0 {
		t.Errorf("the lower layer changed: %s", strings.Join(d, "; "))
	}
	for _, p := range []string{s.Upper, s.Work} {
		if names, _ := readdirNames(p); len(names) > 0 {
			t.Errorf("%s is not empty after failed starts: %q", filepath.Base(p), names)
		}
	}
	relRow(t, "malformed options and command lines", tried, refused, tried-refused, "one line, exit 1, nothing mounted, no daemon")
}
