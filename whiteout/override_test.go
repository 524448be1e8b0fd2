package whiteout

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestOverrideStat(t *testing.T) {
	for _, c := range []struct {
		in   string
		want OverrideStat
		ok   bool
	}{
		{"0:0:755", OverrideStat{0, 0, 0o755}, true},
		{"1000:100:0640", OverrideStat{1000, 100, 0o640}, true},
		{"5:6:100600", OverrideStat{5, 6, 0o600}, true}, // st_mode whole, as fuse-overlayfs writes after chmod
		{"0:0:04755:file", OverrideStat{0, 0, 0o4755}, true},
		{"0:0", OverrideStat{}, false},
		{"a:0:755", OverrideStat{}, false},
		{"0:0:789", OverrideStat{}, false},
		{"-1:0:755", OverrideStat{}, false},
		{"", OverrideStat{}, false},
	} {
		got, err := ParseOverrideStat([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseOverrideStat(%q) = %v, %v; want %v ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
	o := OverrideStat{Uid: 7, Gid: 8, Mode: 0o2750}
	if got := string(o.Format()); got != "7:8:2750" {
		t.Errorf("Format = %q", got)
	}
	for _, n := range OverrideStatNames {
		if _, ok := Escape(n, User); ok {
			t.Errorf("Escape(%q) allowed: a client could forge owners", n)
		}
		if _, ok := Unescape(n, Trusted); ok {
			t.Errorf("Unescape(%q) shows it to clients", n)
		}
	}
	if !OverrideFits(unix.S_IFDIR|0o755) || !OverrideFits(unix.S_IFREG) || OverrideFits(unix.S_IFLNK) || OverrideFits(unix.S_IFCHR) {
		t.Error("OverrideFits: regular files and directories only")
	}
}
