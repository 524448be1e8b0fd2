package tests

// The README, the docs and the package comments stand alone: every file
// they point to is in the repository.

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// mdLink is a markdown link or image target.
	mdLink = regexp.MustCompile(`\]\(([^)#\s]+)`)
	// issueRef is a pointer to the project's issue tracker, which users of
	// the repository do not have.
	issueRef = regexp.MustCompile(`(?i)\bissue [0-9]+|\bissue's\b|\bthe issue\b`)
	// repoPath is a path into the repository named in prose or a comment.
	repoPath = regexp.MustCompile(`(?:^|[\s(` + "`" + `"])((?:\.\./)*(?:docs|tests|bench|cmd|fs|cow|whiteout|layout|dist)/[\w./-]*\.(?:md|go|sh|1|bash))`)
)

func TestDocsStandAlone(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == "results") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".md") || strings.HasSuffix(p, ".go") {
			files = append(files, p)
		}
		return nil
	})
	if len(files) < 10 {
		t.Fatalf("found only %d files under %s", len(files), root)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, f)
		text := string(b)
		if strings.HasSuffix(f, ".go") {
			text = goComments(text)
		}
		for _, out := range []string{"../shared", "shared/SPEC", "SPEC.md", "CLI.md", "STYLE.md"} {
			if strings.Contains(text, out) {
				t.Errorf("%s points outside the repository (%s)", rel, out)
			}
		}
		if strings.HasSuffix(f, ".md") {
			if m := issueRef.FindString(text); m != "" {
				t.Errorf("%s points to an issue (%q): users have only the repository", rel, m)
			}
		}
		var targets []string
		if strings.HasSuffix(f, ".md") {
			for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
				if !strings.Contains(m[1], "://") && !strings.HasPrefix(m[1], "mailto:") {
					targets = append(targets, m[1])
				}
			}
		}
		for _, m := range repoPath.FindAllStringSubmatch(text, -1) {
			targets = append(targets, m[1])
		}
		for _, tg := range targets {
			// Relative to the file, or (as prose says "docs/format.md") to the root.
			p1 := filepath.Join(filepath.Dir(f), tg)
			p2 := filepath.Join(root, strings.TrimLeft(tg, "./"))
			inRepo := strings.HasPrefix(p1, root+"/") || strings.HasPrefix(p2, root+"/")
			_, e1 := os.Stat(p1)
			_, e2 := os.Stat(p2)
			if !inRepo || (e1 != nil && e2 != nil) {
				t.Errorf("%s points to %s, which is not a file of the repository", rel, tg)
			}
		}
	}
}

// goComments returns the comment lines of Go source.
func goComments(src string) string {
	var b strings.Builder
	for _, l := range strings.Split(src, "\n") {
		if i := strings.Index(l, "//"); i >= 0 {
			b.WriteString(l[i:] + "\n")
		}
	}
	return b.String()
}
