package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestCellMedianAndSpread(t *testing.T) {
	c := &cell{vals: []float64{3, 1, 2}}
	if m := c.median(); m != 2 {
		t.Errorf("median = %v, want 2", m)
	}
	if s := c.spread(); s != 0.5 { // (3-1)/2 / 2
		t.Errorf("spread = %v, want 0.5", s)
	}
	if m := (&cell{vals: []float64{4, 1, 2, 3}}).median(); m != 2.5 {
		t.Errorf("even median = %v, want 2.5", m)
	}
}

func TestCellTextRatioAndFailure(t *testing.T) {
	rw := &row{unit: "s", cells: map[string]*cell{
		kernel: {vals: []float64{1, 1, 1}},
		ovlfs:  {vals: []float64{2, 2, 2}},
		fuseOv: {vals: []float64{5}, err: "bash: line 2: chroot: command not found"},
	}}
	if got := rw.cellText(ovlfs); got != "2.00 s 2.00x ±0%" {
		t.Errorf("ovlfs cell = %q", got)
	}
	if got := rw.cellText(fuseOv); got != "fail: chroot: command not found" {
		t.Errorf("failed cell = %q", got)
	}
	if got := rw.cellText(kernel); strings.Contains(got, "x") {
		t.Errorf("kernel cell has a ratio: %q", got)
	}
}

func TestPickAndParents(t *testing.T) {
	if got := pick([]string{"a", "b", "c", "d"}, 2); !reflect.DeepEqual(got, []string{"a", "c"}) {
		t.Errorf("pick = %v", got)
	}
	got := withParents([]string{"usr/lib/x", "etc/a"})
	want := []string{"etc", "etc/a", "usr", "usr/lib", "usr/lib/x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("withParents = %v, want %v", got, want)
	}
}

func TestDiffViews(t *testing.T) {
	want := map[string]string{"a": "100644 0:0 1 bytes", "b": "40755 0:0"}
	got := map[string]string{"a": "100600 0:0 1 bytes", "c": "40755 0:0"}
	d := diffViews(want, got)
	if len(d) != 3 || !strings.HasPrefix(d[0], "a: ") || d[1] != "b: missing" || d[2] != "c: extra" {
		t.Errorf("diffViews = %v", d)
	}
}

func TestWorkloadsNameKnownDatasets(t *testing.T) {
	seen := map[string]bool{}
	for _, w := range workloads {
		if datasets[w.data] == nil {
			t.Errorf("%s: unknown dataset %q", w.name, w.data)
		}
		if seen[w.name] {
			t.Errorf("%s: two workloads with this name", w.name)
		}
		seen[w.name] = true
		for _, s := range datasets[w.data].steps {
			if steps[s] == nil {
				t.Errorf("%s: unknown preparation step %q", w.data, s)
			}
		}
	}
}
