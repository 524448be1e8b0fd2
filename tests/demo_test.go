package tests

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDemo runs tests/demo.sh (make demo): it must show a whiteout, an
// opaque directory and a redirect in the upper, the kernel must show the
// tree ovlfs showed, and it must leave nothing in the temp dir.
func TestDemo(t *testing.T) {
	requireMount(t)
	tmp := t.TempDir()
	cmd := exec.Command("bash", "demo.sh")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "OVLFS_DEMO_NS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"  e/x            char device 0:0",
		`trusted.overlay.opaque="y"`,
		`trusted.overlay.redirect="d"`,
		"the kernel shows exactly the tree ovlfs showed",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("demo.sh left %d entries in its temp dir", len(left))
	}
}
