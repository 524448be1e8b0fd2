package whiteout

// Fuzz targets of the on-disk marker rules (run by `make reliability` for a
// bounded time): opaque classification, redirect parsing, and the client/disk
// xattr name escaping, which must never let a client write overlay metadata.

import (
	"bytes"
	"strings"
	"testing"
)

func FuzzClassifyOpaque(f *testing.F) {
	for _, s := range []string{"y", "x", "", "yy", "Y", "\x00", "y\x00", "n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		got := ClassifyOpaque(v)
		want := NotOpaque
		if bytes.Equal(v, []byte("y")) {
			want = IsOpaque
		} else if bytes.Equal(v, []byte("x")) {
			want = HasXattrWhiteouts
		}
		if got != want {
			t.Errorf("ClassifyOpaque(%q) = %v, want %v", v, got, want)
		}
	})
}

func FuzzParseRedirect(f *testing.F) {
	for _, s := range []string{"a", "/a/b", "/a/b/", "..", "/..", "/a/../b", "a/b", "", "/", "//", "/a//b", "\x00", ".", "/./a", strings.Repeat("/x", 3000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		parts, abs, err := ParseRedirect(v)
		if err != nil {
			if parts != nil {
				t.Errorf("ParseRedirect(%q): parts %q with error %v", v, parts, err)
			}
			return
		}
		if len(parts) == 0 {
			t.Fatalf("ParseRedirect(%q): no parts and no error", v)
		}
		for _, p := range parts {
			if p == "" || p == "." || p == ".." || strings.ContainsAny(p, "/\x00") {
				t.Errorf("ParseRedirect(%q): component %q could leave the root", v, p)
			}
		}
		s := string(v)
		if abs {
			if s[0] != '/' || "/"+strings.Join(parts, "/") != strings.TrimRight(s, "/") {
				t.Errorf("ParseRedirect(%q) = %q (abs): not the same path", v, parts)
			}
		} else if len(parts) != 1 || parts[0] != s {
			t.Errorf("ParseRedirect(%q) = %q (relative): want the one sibling name", v, parts)
		}
	})
}

func FuzzEscapeUnescape(f *testing.F) {
	for _, s := range []string{"user.a", "trusted.overlay.opaque", "trusted.overlay.overlay.opaque", "user.overlay.opaque",
		"user.overlay.redirect", "user.fuseoverlayfs.opaque", "trusted.overlay.", "security.capability", "trusted.overlay.overlay.", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		for _, ns := range []NS{Trusted, User} {
			if disk, ok := Escape(name, ns); ok {
				if IsPrivateXattr(disk, ns) {
					t.Errorf("%v: a client's %q is stored as %q, which is overlay metadata", ns, name, disk)
				}
				if back, ok := Unescape(disk, ns); !ok || back != name {
					t.Errorf("%v: Unescape(Escape(%q)) = %q, %v", ns, name, back, ok)
				}
			}
			if client, ok := Unescape(name, ns); ok {
				if IsPrivateXattr(name, ns) {
					t.Errorf("%v: private %q is shown to clients as %q", ns, name, client)
				}
				if disk, ok := Escape(client, ns); !ok || disk != name {
					t.Errorf("%v: Escape(Unescape(%q)) = %q, %v", ns, name, disk, ok)
				}
			}
		}
	})
}
