package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want func(o *options) // fills the expected fields on a fresh options
		err  string           // substring of the expected error
	}{
		{
			name: "podman",
			args: []string{"-o", "lowerdir=/l/A:/l/B,upperdir=/s/diff,workdir=/s/work", "/s/merged"},
			want: func(o *options) {
				o.Lowers = []string{"/l/A", "/l/B"}
				o.Upper, o.UpperSet, o.Work, o.WorkSet = "/s/diff", true, "/s/work", true
				o.Mountpoint = "/s/merged"
			},
		},
		{
			name: "podman volatile fsync and leading-colon mapping",
			args: []string{"-o", "lowerdir=a,upperdir=u,workdir=w,volatile,fsync=0,uidmapping=:0:1000:1:1:100000:65536", "m"},
			want: func(o *options) {
				o.Lowers, o.Upper, o.UpperSet, o.Work, o.WorkSet, o.Mountpoint = []string{"a"}, "u", true, "w", true, "m"
				o.NoFsync, o.Volatile = true, true
				o.UIDMap = []idMap{{0, 1000, 1}, {1, 100000, 65536}}
			},
		},
		{
			name: "mount.fuse3 form, options after positionals, several -o",
			args: []string{"src", "/mnt", "-o", "rw,lowerdir=/a", "-o", ",,nodev,nosuid,,", "-o", "allow_other"},
			want: func(o *options) {
				o.Source, o.Mountpoint, o.Lowers = "src", "/mnt", []string{"/a"}
				o.Kernel = []string{"nodev", "nosuid"}
				o.AllowOther = true
			},
		},
		{
			name: "escaped colon comma and backslash",
			args: []string{`-olowerdir=/x\:y:/p\,q:/b\\s`, "m"},
			want: func(o *options) {
				o.Lowers, o.Mountpoint = []string{"/x:y", "/p,q", `/b\s`}, "m"
			},
		},
		{
			name: "foreground debug timeout",
			args: []string{"-f", "-o", "lowerdir=/a,timeout=1.5,debug,static_nlink,noxattrs=1", "m"},
			want: func(o *options) {
				o.Lowers, o.Mountpoint = []string{"/a"}, "m"
				o.Foreground, o.Debug = true, true
				o.Timeout, o.TimeoutSet = 1500*time.Millisecond, true
				o.StaticNlink, o.NoXattrs = true, true
			},
		},
		{
			name: "-d means foreground",
			args: []string{"-d", "-o", "lowerdir=/a", "m"},
			want: func(o *options) {
				o.Lowers, o.Mountpoint, o.Foreground, o.Debug = []string{"/a"}, "m", true, true
			},
		},
		{
			name: "kernel options last wins, context quoted with commas",
			args: []string{"-o", `lowerdir=/a,ro,noexec,exec,context="system_u:object_r:container_file_t:s0:c1,c2",rw,noatime`, "m"},
			want: func(o *options) {
				o.Lowers, o.Mountpoint = []string{"/a"}, "m"
				o.Kernel = []string{`context="system_u:object_r:container_file_t:s0:c1,c2"`, "noatime"}
			},
		},
		{
			name: "compat accepted silently, unknown warned",
			args: []string{"-o", "lowerdir=/a,threaded=1,writeback=0,fast_ino=1,noacl,redirect_dir=off,xino=auto,user,nofail,_netdev,auto,noauto,fsync=1,xattr_permissions=0,bogus,foo=bar", "m"},
			want: func(o *options) {
				o.Lowers, o.Mountpoint = []string{"/a"}, "m"
				o.Threaded, o.FastIno, o.NoACL = true, true, true
				o.RedirectDir, o.Xino = "off", "auto"
				o.Unknown = []string{"bogus", "foo=bar"}
			},
		},
		{
			name: "kernel overlay options honoured: userxattr, uuid, off features, atime, remount",
			args: []string{"-o", "lowerdir=/a,userxattr,uuid=null,metacopy=off,index=off,nfs_export=off,verity=off,relatime,nodiratime,noatime,remount", "m"},
			want: func(o *options) {
				o.Lowers, o.Mountpoint = []string{"/a"}, "m"
				o.UserXattr, o.UUID, o.Remount = true, "null", true
				o.Kernel = []string{"noatime", "nodiratime"}
			},
		},
		{
			name: "squash, mapping and xattr_permissions options are parsed",
			args: []string{"-o", "lowerdir=/a,squash_to_root,squash_to_uid=5,squash_to_gid=6,xattr_permissions=2,gidmapping=0:0:10", "m"},
			want: func(o *options) {
				o.Lowers, o.Mountpoint = []string{"/a"}, "m"
				o.SquashToRoot, o.SquashUID, o.SquashGID, o.XattrPermissions = true, 5, 6, 2
				o.GIDMap = []idMap{{0, 0, 10}}
			},
		},
		{name: "version", args: []string{"--version"}, want: func(o *options) { o.Version = true }},
		{name: "V", args: []string{"-V"}, want: func(o *options) { o.Version = true }},
		{name: "help", args: []string{"-h"}, want: func(o *options) { o.Help = true }},
		{name: "no mount point", args: []string{"-o", "lowerdir=/a"}, err: "no mount point"},
		{name: "three positionals", args: []string{"a", "b", "c"}, err: "too many"},
		{name: "unknown flag", args: []string{"--bogus", "m"}, err: "unknown flag"},
		{name: "empty lowerdir", args: []string{"-o", "lowerdir=", "m"}, err: "lowerdir"},
		{name: "empty lower in list", args: []string{"-o", "lowerdir=/a::/b", "m"}, err: "empty directory"},
		{name: "bad mapping", args: []string{"-o", "lowerdir=/a,uidmapping=0:1", "m"}, err: "uidmapping"},
		{name: "zero-size mapping", args: []string{"-o", "lowerdir=/a,uidmapping=0:1:0", "m"}, err: "uidmapping"},
		{name: "bad squash", args: []string{"-o", "lowerdir=/a,squash_to_uid=x", "m"}, err: "squash_to_uid"},
		{name: "bad bit", args: []string{"-o", "lowerdir=/a,threaded=2", "m"}, err: "threaded"},
		{name: "bad timeout", args: []string{"-o", "lowerdir=/a,timeout=-1", "m"}, err: "timeout"},
		{name: "bad xattr_permissions", args: []string{"-o", "lowerdir=/a,xattr_permissions=3", "m"}, err: "xattr_permissions"},
		{name: "bad xino", args: []string{"-o", "lowerdir=/a,xino=maybe", "m"}, err: "xino"},
		{name: "value on flag option", args: []string{"-o", "lowerdir=/a,static_nlink=1", "m"}, err: "static_nlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseArgs(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseArgs(%q) error = %v, want one containing %q", tc.args, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tc.args, err)
			}
			want := &options{}
			if !got.Version && !got.Help {
				want.SquashUID, want.SquashGID = -1, -1
			}
			tc.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parseArgs(%q)\n got %+v\nwant %+v", tc.args, got, want)
			}
		})
	}
}

func TestSplitOpts(t *testing.T) {
	for in, want := range map[string][]string{
		"":              {""},
		"a,b":           {"a", "b"},
		`a\,b,c`:        {"a,b", "c"},
		`a\\,b`:         {`a\\`, "b"},
		`x="p,q",y`:     {`x="p,q"`, "y"},
		`lowerdir=a\:b`: {`lowerdir=a\:b`},
		`trailing\`:     {`trailing\`},
	} {
		if got := splitOpts(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitOpts(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{
		"lowerdir=/a:/b,upperdir=/u,workdir=/w",
		`lowerdir=/x\:y:/z\\,uidmapping=:0:1000:1:1:100000:65536`,
		`context="a:b:c,d",ro,nodev`,
		"timeout=1e3,threaded=1,xattr_permissions=2,squash_to_uid=4294967295",
		`\`, `"`, ",,,", "=", "lowerdir=::",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parseArgs([]string{"-o", s, "src", "/mnt"})
		if err != nil {
			return
		}
		for _, l := range o.Lowers {
			if l == "" {
				t.Errorf("empty lower from %q", s)
			}
		}
		o.fsConfig()
	})
}

func TestUserAllowOther(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		conf string
		want bool
	}{
		{"user_allow_other\n", true},
		{"# comment\n  user_allow_other  \nmount_max = 10\n", true},
		{"#user_allow_other\n", false},
		{"user_allow_others\n", false},
		{"mount_max = 1000 # user_allow_other\n", false},
		{"", false},
	} {
		p := filepath.Join(dir, "fuse.conf")
		if err := os.WriteFile(p, []byte(c.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := userAllowOther(p); got != c.want {
			t.Errorf("userAllowOther(%q) = %v, want %v", c.conf, got, c.want)
		}
	}
	if userAllowOther(filepath.Join(dir, "missing")) {
		t.Error("a missing fuse.conf allows allow_other")
	}
}

// TestResolvedEnv: the paths the parent hands its daemon come back exactly,
// whatever bytes they hold, and a list that does not match the command line
// is refused (the daemon then resolves the paths itself).
func TestResolvedEnv(t *testing.T) {
	o := &options{
		Mountpoint: "/m n\nt", Upper: "/u\"p", UpperSet: true, Work: "/w\\k", WorkSet: true,
		Lowers: []string{"/l1", "/l\xff2", "/l:3,x"},
	}
	t.Setenv(resolvedEnv, o.resolvedEnv())
	got := &options{UpperSet: true, WorkSet: true, Mountpoint: "m", Upper: "u", Work: "w", Lowers: []string{"a", "b", "c"}}
	if !got.takeResolved() {
		t.Fatal("takeResolved refused its own encoding")
	}
	if got.Mountpoint != o.Mountpoint || got.Upper != o.Upper || got.Work != o.Work || !reflect.DeepEqual(got.Lowers, o.Lowers) {
		t.Errorf("got %q %q %q %q, want %q %q %q %q", got.Mountpoint, got.Upper, got.Work, got.Lowers, o.Mountpoint, o.Upper, o.Work, o.Lowers)
	}
	if _, ok := os.LookupEnv(resolvedEnv); ok {
		t.Errorf("%s is still set", resolvedEnv)
	}

	for _, tc := range []struct {
		name string
		env  string
		o    options
	}{
		{"fewer lowers", o.resolvedEnv(), options{UpperSet: true, WorkSet: true, Lowers: []string{"a", "b"}}},
		{"no upper on the command line", o.resolvedEnv(), options{Lowers: []string{"a", "b", "c"}}},
		{"garbage", `"/m" /u`, options{Lowers: []string{}}},
	} {
		t.Setenv(resolvedEnv, tc.env)
		o2 := tc.o
		if o2.takeResolved() {
			t.Errorf("%s: takeResolved accepted %q", tc.name, tc.env)
		}
	}
}

// TestResolver: the resolver that keeps resolved parents answers as
// resolveDir does, for siblings, symlinks at any depth, relative paths, the
// root and paths that are wrong.
func TestResolver(t *testing.T) {
	d := t.TempDir()
	for _, p := range []string{"real/a", "real/b", "real/c/d", "other"} {
		if err := os.MkdirAll(filepath.Join(d, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(d, "real/file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for target, link := range map[string]string{"real": "ln", "real/a": "real/la", "../other": "real/up", "nowhere": "real/dangling"} {
		if err := os.Symlink(target, filepath.Join(d, link)); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(d)
	var rs resolver
	for _, p := range []string{
		"real/a", "real/b", "ln/a", "ln/b", "ln/c/d", "real/la", "ln/la", "real/up", "ln/../other",
		"real/a/", "./real/c/../a", "/", d, "real/missing", "real/file", "real/dangling", "",
	} {
		want, werr := resolveDir("lowerdir", p)
		got, gerr := rs.dir("lowerdir", p)
		if got != want || (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
			t.Errorf("%q: resolver %q, %v; resolveDir %q, %v", p, got, gerr, want, werr)
		}
	}
}
