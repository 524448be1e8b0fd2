package main

import (
	"encoding/csv"
	"fmt"
	"html"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// runInfo says where and with what the numbers were taken.
type runInfo struct {
	date, stamp, machine, kernel, ovlfs, fuseOv, pinning, data string
}

// tools the workloads run, and the Debian package of each.
var tools = map[string]string{"debootstrap": "debootstrap", "fio": "fio", "git": "git", "fuse-overlayfs": "fuse-overlayfs"}

// installTools installs with apt-get whatever the run needs and lacks.
func (b *bench) installTools() error {
	var missing []string
	for cmd, pkg := range tools {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	logf("installing %s", strings.Join(missing, " "))
	install := append([]string{"apt-get", "install", "-y", "-q"}, missing...)
	if _, err := b.command("/", []string{"DEBIAN_FRONTEND=noninteractive"}, install, 30*time.Minute); err == nil {
		return nil
	}
	if _, err := b.command("/", nil, []string{"apt-get", "update", "-q"}, 30*time.Minute); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	if _, err := b.command("/", []string{"DEBIAN_FRONTEND=noninteractive"}, install, 30*time.Minute); err != nil {
		return fmt.Errorf("apt-get install %s: %w", strings.Join(missing, " "), err)
	}
	return nil
}

func (b *bench) collectInfo(quick bool) {
	now := time.Now()
	host, _ := os.Hostname()
	i := &b.info
	i.date = now.Format("2006-01-02 15:04 MST")
	i.stamp = now.Format("20060102-150405") + "-" + host
	if quick {
		i.stamp += "-quick"
	}
	i.machine = fmt.Sprintf("%s, %s, %d CPUs, %s", host, cpuModel(), runtime.NumCPU(), memTotal())
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	i.kernel = "Linux " + strings.TrimSpace(string(rel))
	var params []string // the kernel overlay's defaults shape its numbers
	for _, p := range []string{"redirect_dir", "metacopy", "index", "xino_auto"} {
		if v, err := os.ReadFile("/sys/module/overlay/parameters/" + p); err == nil {
			params = append(params, p+"="+strings.TrimSpace(string(v)))
		}
	}
	if len(params) > 0 {
		i.kernel += " (overlay " + strings.Join(params, " ") + ")"
	}
	i.ovlfs = firstLine(b.ovlfs, "--version", "")
	i.fuseOv = firstLine("fuse-overlayfs", "--version", "fuse-overlayfs")
	i.pinning = "unpinned"
	if b.cpu != "" {
		i.pinning = "pinned to CPU " + b.cpu + " (client and daemon, taskset)"
	}
	stats, _ := os.ReadFile(b.path("stats.txt"))
	i.data = strings.TrimSpace(string(stats))
}

// row is one line of the table: a workload in one mode.
type row struct {
	workload, mode, unit string
	cells                map[string]*cell
}

// cell is one target's runs of a row.
type cell struct {
	vals   []float64
	err    string
	redone int
}

func (c *cell) median() float64 {
	v := append([]float64(nil), c.vals...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// spread is half the min-max range, as a fraction of the median.
func (c *cell) spread() float64 {
	lo, hi := c.vals[0], c.vals[0]
	for _, v := range c.vals {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if m := c.median(); m > 0 {
		return (hi - lo) / 2 / m
	}
	return 0
}

// ok says the cell has numbers and no failed run.
func (c *cell) ok() bool { return c != nil && c.err == "" && len(c.vals) > 0 }

func (b *bench) rows() []*row {
	var rows []*row
	index := map[string]*row{}
	for _, r := range b.results {
		key := r.workload + "\x00" + r.mode
		rw := index[key]
		if rw == nil {
			rw = &row{workload: r.workload, mode: r.mode, unit: r.unit, cells: map[string]*cell{}}
			index[key] = rw
			rows = append(rows, rw)
		}
		c := rw.cells[r.target]
		if c == nil {
			c = &cell{}
			rw.cells[r.target] = c
		}
		c.redone += r.redone
		if r.err != "" {
			if c.err == "" {
				c.err = r.err
			}
			continue
		}
		c.vals = append(c.vals, r.value)
	}
	return rows
}

// cellText is a target's cell: median, ratio to the kernel's median, spread.
func (rw *row) cellText(t string) string {
	c := rw.cells[t]
	switch {
	case c == nil:
		return "-"
	case c.err == "n/a":
		return "-"
	case c.err != "":
		return "fail: " + shortReason(c.err)
	case len(c.vals) == 0:
		return "-"
	}
	s := formatValue(c.median(), rw.unit)
	if k := rw.cells[kernel]; t != kernel && k.ok() && k.median() > 0 {
		s += fmt.Sprintf(" %.2fx", c.median()/k.median())
	}
	return s + fmt.Sprintf(" ±%.0f%%", 100*c.spread())
}

// report prints the table and, for a complete run, writes the CSV, the
// table (markdown) and the chart under b.out.
func (b *bench) report(complete bool) error {
	rows := b.rows()
	if len(rows) == 0 {
		return fmt.Errorf("no results")
	}
	header, notes := b.header(), b.notes(rows)
	fmt.Println()
	fmt.Println(header)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "workload\tmode\t%s\n", strings.Join(b.targets, "\t"))
	for _, rw := range rows {
		cells := []string{rw.workload, rw.mode}
		for _, t := range b.targets {
			cells = append(cells, rw.cellText(t))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	fmt.Println(notes)
	if !complete {
		fmt.Println("interrupted: no files written")
		return nil
	}
	if err := os.MkdirAll(b.out, 0o755); err != nil {
		return err
	}
	base := filepath.Join(b.out, b.info.stamp)
	if err := b.writeCSV(base + ".csv"); err != nil {
		return err
	}
	if err := os.WriteFile(base+".md", []byte(b.markdown(rows, header, notes)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(base+".svg", []byte(b.chart(rows)), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s.csv (every run), %s.md (this table), %s.svg (chart)\n", base, base, base)
	return nil
}

func (b *bench) header() string {
	i := b.info
	return fmt.Sprintf("ovlbench %s | %s | %s\novlfs: %s | %s\n%s; median of %d rounds; ratio = median / kernel overlay's median (lower is faster); ± = half the min-max range, in %% of the median",
		i.date, i.machine, i.kernel, i.ovlfs, i.fuseOv, i.pinning, b.rounds)
}

func (b *bench) notes(rows []*row) string {
	var n []string
	if b.info.data != "" {
		n = append(n, "data: "+b.info.data)
	}
	redone, hit := 0, 0
	for _, r := range b.results {
		redone += r.redone
		if r.stillHit {
			hit++
		}
	}
	if redone > 0 {
		n = append(n, fmt.Sprintf("%d runs were redone: their caches were dropped by another process or evicted by reclaim", redone))
	}
	if hit > 0 {
		n = append(n, fmt.Sprintf("%d runs kept although disturbed %d times in a row (disturbed in the CSV)", hit, maxRedo+1))
	}
	for _, rw := range rows {
		for _, t := range b.targets {
			if c := rw.cells[t]; c != nil && c.err != "" && c.err != "n/a" {
				n = append(n, fmt.Sprintf("fail: %s (%s) on %s: %s", rw.workload, rw.mode, t, c.err))
			}
		}
	}
	for _, v := range b.views {
		n = append(n, "VIEW CHECK: "+v)
	}
	if len(b.views) == 0 {
		n = append(n, "view check: every target showed the kernel overlay's merged view of every dataset before timing")
	}
	n = append(n, "mount time and daemon VmHWM of every run: see the CSV")
	return "\n" + strings.Join(n, "\n")
}

func (b *bench) markdown(rows []*row, header, notes string) string {
	var s strings.Builder
	for _, l := range strings.Split(header, "\n") {
		s.WriteString(l + "  \n")
	}
	s.WriteString("\n| workload | mode | " + strings.Join(b.targets, " | ") + " |\n|---|---|" + strings.Repeat("---|", len(b.targets)) + "\n")
	for _, rw := range rows {
		cells := []string{rw.workload, rw.mode}
		for _, t := range b.targets {
			cells = append(cells, strings.ReplaceAll(rw.cellText(t), "|", "/"))
		}
		s.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	for _, l := range strings.Split(strings.TrimSpace(notes), "\n") {
		s.WriteString("\n- " + l)
	}
	return s.String() + "\n"
}

// writeCSV writes every run, each line with the date, machine and versions.
func (b *bench) writeCSV(p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	w.Write([]string{"date", "machine", "kernel", "ovlfs", "fuse_overlayfs", "pinning", "workload", "mode", "target",
		"round", "value", "unit", "mount_ms", "daemon_vmhwm_kib", "redone", "disturbed", "error"})
	i := b.info
	for _, r := range b.results {
		value, hwm := "", ""
		if r.err == "" {
			value = fmt.Sprintf("%.6g", r.value)
		}
		if r.hwmKiB >= 0 {
			hwm = fmt.Sprint(r.hwmKiB)
		}
		w.Write([]string{i.date, i.machine, i.kernel, i.ovlfs, i.fuseOv, i.pinning, r.workload, r.mode, r.target,
			fmt.Sprint(r.round), value, r.unit, fmt.Sprintf("%.2f", r.mountMs), hwm, fmt.Sprint(r.redone), fmt.Sprint(r.stillHit), r.err})
	}
	w.Flush()
	return w.Error()
}

// chart draws, for every timed row, each FUSE target's median as a ratio to
// the kernel overlay's on a log scale: the 1x line is the kernel.
func (b *bench) chart(rows []*row) string {
	var rs []*row
	for _, rw := range rows {
		if k := rw.cells[kernel]; k.ok() && k.median() > 0 && rw.unit != "MiB" {
			rs = append(rs, rw)
		}
	}
	var others []string
	for _, t := range b.targets {
		if t != kernel {
			others = append(others, t)
		}
	}
	colors := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"}
	const width, left, right, top, rowH = 1100.0, 360.0, 1050.0, 110.0, 34.0
	lo, hi := -3.0, 7.0 // 1/8x .. 128x
	x := func(ratio float64) float64 {
		l := math.Max(lo, math.Min(hi, math.Log2(ratio)))
		return left + (l-lo)/(hi-lo)*(right-left)
	}
	height := top + rowH*float64(len(rs)) + 50
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	text := func(x, y float64, anchor, style, t string) {
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" text-anchor="%s" %s>%s</text>`+"\n", x, y, anchor, style, html.EscapeString(t))
	}
	i := b.info
	text(10, 22, "start", `font-size="16" font-weight="bold"`, "Time relative to the kernel overlay (median of "+fmt.Sprint(b.rounds)+" rounds, log scale; left of 1x is faster)")
	text(10, 42, "start", `fill="#555"`, i.date+" | "+i.machine+" | "+i.kernel)
	text(10, 58, "start", `fill="#555"`, i.ovlfs+" | "+i.fuseOv+" | "+i.pinning)
	for j, t := range others {
		lx := 10 + float64(j)*160
		fmt.Fprintf(&s, `<rect x="%.0f" y="70" width="14" height="12" fill="%s"/>`+"\n", lx, colors[j%len(colors)])
		text(lx+20, 80, "start", "", t)
	}
	for e := lo; e <= hi; e++ {
		gx := x(math.Exp2(e))
		style := `stroke="#ddd"`
		if e == 0 {
			style = `stroke="#333" stroke-width="2"`
		}
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" %s/>`+"\n", gx, top-8, gx, height-40, style)
		text(gx, top-12, "middle", `fill="#555"`, formatRatio(math.Exp2(e)))
		text(gx, height-26, "middle", `fill="#555"`, formatRatio(math.Exp2(e)))
	}
	for n, rw := range rs {
		y := top + float64(n)*rowH
		if n%2 == 1 {
			fmt.Fprintf(&s, `<rect x="0" y="%.1f" width="%.0f" height="%.0f" fill="#f4f4f4"/>`+"\n", y, width, rowH)
		}
		text(left-8, y+rowH/2-1, "end", "", rw.workload+" ("+rw.mode+")")
		km := rw.cells[kernel].median()
		text(left-8, y+rowH/2+12, "end", `font-size="10" fill="#777"`, "kernel "+formatValue(km, rw.unit))
		for j, t := range others {
			by := y + 4 + float64(j)*(rowH-8)/float64(len(others))
			bh := (rowH-8)/float64(len(others)) - 2
			c := rw.cells[t]
			switch {
			case c == nil:
				continue
			case !c.ok():
				text(x(1)+6, by+bh-1, "start", `fill="#c00"`, t+": fail: "+shortReason(c.err))
				continue
			}
			ratio := c.median() / km
			x0, x1 := x(1), x(ratio)
			if x1 < x0 {
				x0, x1 = x1, x0
			}
			fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %s</title></rect>`+"\n",
				x0, by, math.Max(x1-x0, 1), bh, colors[j%len(colors)], html.EscapeString(t), html.EscapeString(rw.cellText(t)))
			label := fmt.Sprintf("%.2fx", ratio)
			if x1 > right-50 { // off the scale: the label goes inside the bar
				text(x1-4, by+bh-2, "end", `font-size="10" fill="white" font-weight="bold"`, label+" ▸")
			} else {
				text(x1+4, by+bh-2, "start", `font-size="10"`, label)
			}
		}
	}
	text(10, height-8, "start", `fill="#555"`, "Each bar: a target's median divided by the kernel overlay's median for the same workload. Daemon RSS is in the table only.")
	s.WriteString("</svg>\n")
	return s.String()
}

func formatRatio(r float64) string {
	if r < 1 {
		return fmt.Sprintf("1/%.0fx", 1/r)
	}
	return fmt.Sprintf("%.0fx", r)
}

func formatValue(v float64, unit string) string {
	switch {
	case unit == "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	case unit == "ms":
		return fmt.Sprintf("%.1f ms", v)
	case v < 0.001:
		return fmt.Sprintf("%.0f µs", v*1e6)
	case v < 1:
		return fmt.Sprintf("%.1f ms", v*1e3)
	case v < 100:
		return fmt.Sprintf("%.2f s", v)
	}
	return fmt.Sprintf("%.0f s", v)
}

// shortReason is a failure as a table cell shows it (the notes have it whole).
func shortReason(s string) string {
	const bash = "bash: line " // "bash: line 2: chroot: command not found"
	if i := strings.Index(s, bash); i >= 0 {
		if j := strings.Index(s[i+len(bash):], ": "); j >= 0 {
			s = s[:i] + s[i+len(bash)+j+2:]
		}
	}
	if r := []rune(s); len(r) > 32 {
		return string(r[:32]) + "…"
	}
	return s
}

func cpuModel() string {
	s, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(s), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	s, _ := os.ReadFile("/proc/meminfo")
	var kib int64
	fmt.Sscanf(string(s), "MemTotal: %d kB", &kib)
	return fmt.Sprintf("%.0f GiB", float64(kib)/(1<<20))
}

// firstLine is the first line of `cmd arg` containing want (any line when
// want is empty).
func firstLine(cmd, arg, want string) string {
	out, _ := exec.Command(cmd, arg).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && strings.Contains(l, want) {
			return l
		}
	}
	return cmd + " (version unknown)"
}
