// Command ovlctl manages an overlay2 layer store (docs/format.md,
// "Layer stores and tarballs"): layers, OCI/Docker layer tarballs, images, and mounts with
// the kernel overlay or ovlfs. It is a thin shell over package layout.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ovlfs/ovlfs/layout"
)

var version = "dev"

// A command: its arguments, what it does, its flags, and whether it only
// reads the store.
type cmdSpec struct {
	name, args, what string
	min, max         int
	flags            []string
	run              func(*command) error
	// reads: opens the store read-only (makes nothing, takes no lock).
	reads bool
}

// LAYER is a layer id, a unique prefix of one, an image name or id (its top
// layer), or a Docker container id (its own layer).
var commands = []cmdSpec{
	{name: "create", args: "[--parent LAYER] [ID]", what: "make a layer (a random id without ID) and print its id", max: 1, flags: []string{"parent"}, run: cmdCreate},
	{name: "apply", args: "LAYER [FILE|-]", what: "extract a layer tarball (tar, gzip, zstd, bzip2) into an empty layer", min: 1, max: 2, run: cmdApply},
	{name: "diff", args: "LAYER [FILE|-]", what: "write the layer's changes as an OCI layer tarball", min: 1, max: 2, run: cmdDiff, reads: true},
	{name: "import", args: "[--name NAME] FILE|-", what: "import a docker/podman save or OCI layout archive", min: 1, max: 1, flags: []string{"name"}, run: cmdImport},
	{name: "images", args: "[--json] [--no-trunc]", what: "list images", flags: []string{"json", "no-trunc"}, run: cmdImages, reads: true},
	{name: "rmi", args: "IMAGE", what: "remove an image and the layers nothing else uses", min: 1, max: 1, run: cmdRmi},
	{name: "mount", args: "[--driver auto|kernel|fuse] [--ro] LAYER [PATH]", what: "mount a layer; print the mount point", min: 1, max: 2, flags: []string{"driver", "ro"}, run: cmdMount},
	{name: "umount", args: "LAYER", what: "unmount a layer", min: 1, max: 1, run: cmdUmount},
	{name: "rm", args: "[--force] LAYER", what: "remove a layer (--force unmounts it and drops its image)", min: 1, max: 1, flags: []string{"force"}, run: cmdRm},
	{name: "prune", args: "", what: "remove the layers no image, container or mount uses", run: cmdPrune},
	{name: "ls", args: "[--json] [--no-trunc]", what: "list layers and what uses them", flags: []string{"json", "no-trunc"}, run: cmdLs, reads: true},
	{name: "inspect", args: "LAYER...", what: "describe layers as JSON (GraphDriver.Data: LowerDir, UpperDir, WorkDir, MergedDir)", min: 1, max: -1, run: cmdInspect, reads: true},
	{name: "df", args: "[--json] [--no-trunc]", what: "disk use of images, containers and layers", flags: []string{"json", "no-trunc"}, run: cmdDf, reads: true},
	{name: "init", args: "[--parent LAYER] ID", what: "make a container's layers: ID-init (init files) and ID on it", min: 1, max: 1, flags: []string{"parent"}, run: cmdInit},
	{name: "check", args: "[--repair] [--json]", what: "find (and with --repair fix) what breaks mounts", flags: []string{"repair", "json"}, run: cmdCheck, reads: true},
}

const usageHead = `usage: ovlctl [--root DIR] COMMAND [ARGS]

commands:
`

const usageTail = `
LAYER is a layer id or a unique prefix of one, an image name or id (its top
layer), or a Docker container id (its layer). --root defaults to /var/lib/ovlfs
for root, $XDG_DATA_HOME/ovlfs otherwise. ovlctl COMMAND --help shows a
command's flags. ls, images, df, inspect, diff and check (without --repair)
never write to the store.
`

func usage() string {
	var b strings.Builder
	b.WriteString(usageHead)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, c.what)
	}
	tw.Flush()
	b.WriteString(usageTail)
	return b.String()
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "ovlctl: "+strings.ReplaceAll(msg, "\n", "; "))
		}
		if e, ok := err.(errExit); ok {
			os.Exit(int(e))
		}
		os.Exit(1)
	}
}

// errExit ends with a status but no message (check found faults).
type errExit int

func (e errExit) Error() string { return "" }

func run(args []string) error {
	root := ""
	// Global flags before the command.
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch a := args[0]; {
		case a == "-h" || a == "--help":
			fmt.Print(usage())
			return nil
		case a == "--version":
			fmt.Println("ovlctl", version)
			return nil
		case a == "--root":
			if len(args) < 2 || args[1] == "" || strings.HasPrefix(args[1], "-") {
				return errors.New("--root needs a directory (--root DIR)")
			}
			root, args = args[1], args[2:]
		case strings.HasPrefix(a, "--root="):
			root, args = strings.TrimPrefix(a, "--root="), args[1:]
			if root == "" {
				return errors.New("--root needs a directory (--root=DIR)")
			}
		default:
			return fmt.Errorf("unknown flag %s (ovlctl --help)", a)
		}
	}
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage())
		return errors.New("no command")
	}
	name, args := args[0], args[1:]
	switch name {
	case "help":
		if len(args) == 0 {
			fmt.Print(usage())
			return nil
		}
		name, args = args[0], []string{"--help"}
	case "unmount":
		name = "umount"
	}
	for _, spec := range commands {
		if spec.name == name {
			fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fs.StringVar(&root, "root", root, "the store directory")
			c := &command{fs: fs, spec: spec}
			return c.run(args)
		}
	}
	return fmt.Errorf("unknown command %q (ovlctl --help)", name)
}

// command is one parsed command line.
type command struct {
	fs      *pflag.FlagSet
	spec    cmdSpec
	args    []string
	store   *layout.Store
	parent  string
	name    string
	driver  string
	json    bool
	ro      bool
	force   bool
	repair  bool
	noTrunc bool
}

// help is the command's own help.
func (c *command) help() string {
	return fmt.Sprintf("usage: ovlctl [--root DIR] %s %s\n\n%s.\n\nflags:\n%s", c.spec.name, c.spec.args, c.spec.what, c.fs.FlagUsages())
}

// run parses the command's flags, checks the number of arguments, opens the
// store (read-only for a command that only reads) and runs the command.
func (c *command) run(args []string) error {
	for _, f := range c.spec.flags {
		switch f {
		case "parent":
			c.fs.StringVar(&c.parent, "parent", "", "the layer (or image) to make it on")
		case "name":
			c.fs.StringVar(&c.name, "name", "", "the image's name (a docker reference, e.g. app:1.0)")
		case "driver":
			c.fs.StringVar(&c.driver, "driver", layout.DriverAuto, "auto, kernel or fuse")
		case "json":
			c.fs.BoolVar(&c.json, "json", false, "JSON output")
		case "ro":
			c.fs.BoolVar(&c.ro, "ro", false, "read-only")
		case "force":
			c.fs.BoolVar(&c.force, "force", false, "unmount first, drop the image that holds it")
		case "repair":
			c.fs.BoolVar(&c.repair, "repair", false, "fix what is found")
		case "no-trunc":
			c.fs.BoolVar(&c.noTrunc, "no-trunc", false, "whole ids")
		}
	}
	c.fs.BoolP("help", "h", false, "this help")
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Print(c.help())
			return nil
		}
		return fmt.Errorf("%s: %v (ovlctl %s --help)", c.spec.name, err, c.spec.name)
	}
	if h, _ := c.fs.GetBool("help"); h {
		fmt.Print(c.help())
		return nil
	}
	c.args = c.fs.Args()
	if len(c.args) < c.spec.min || (c.spec.max >= 0 && len(c.args) > c.spec.max) {
		return fmt.Errorf("%s: wrong number of arguments (usage: ovlctl %s %s)", c.spec.name, c.spec.name, c.spec.args)
	}
	root, _ := c.fs.GetString("root")
	if root == "" {
		if c.fs.Changed("root") {
			return errors.New("--root needs a directory (--root DIR)")
		}
		root = layout.DefaultRoot()
	}
	open := layout.Open
	if c.spec.reads && !c.repair {
		open = layout.OpenReadOnly
	}
	s, err := open(root)
	if err != nil {
		return err
	}
	defer s.Close()
	s.Warn = func(msg string) { fmt.Fprintln(os.Stderr, "ovlctl: warning: "+msg) }
	c.store = s
	return c.spec.run(c)
}

// layer resolves what the user gave where a layer is meant.
func (c *command) layer(ref string) (string, error) {
	return c.store.Resolve(ref)
}

// id shows a layer or image id, 12 characters unless --no-trunc.
func (c *command) id(id string) string {
	if c.noTrunc {
		return id
	}
	return short(id)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdCreate(c *command) error {
	id, parent := "", ""
	if len(c.args) > 0 {
		id = c.args[0]
	}
	if c.parent != "" {
		p, err := c.layer(c.parent)
		if err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		parent = p
	}
	id, err := c.store.Create(id, parent)
	if err != nil {
		return err
	}
	fmt.Println(id)
	return nil
}

func cmdApply(c *command) error {
	id, err := c.layer(c.args[0])
	if err != nil {
		return err
	}
	in, size, closeIn, err := openInput(c.args)
	if err != nil {
		return err
	}
	defer closeIn()
	r := withProgress("apply "+short(id), in, size)
	ap, err := c.store.ApplyDiff(id, r)
	doneProgress(r)
	if err != nil {
		return err
	}
	if err := c.store.RecordDiffID(id, ap.DiffID); err != nil {
		return err
	}
	fmt.Println(ap.DiffID)
	return nil
}

// openInput opens FILE, or stdin for "-" or no file.
func openInput(args []string) (io.Reader, int64, func(), error) {
	if len(args) < 2 || args[1] == "-" {
		size := int64(-1)
		if fi, err := os.Stdin.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		return os.Stdin, size, func() {}, nil
	}
	f, err := os.Open(args[1])
	if err != nil {
		return nil, 0, nil, err
	}
	var size int64 = -1
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	return f, size, func() { f.Close() }, nil
}

func cmdDiff(c *command) error {
	id, err := c.layer(c.args[0])
	if err != nil {
		return err
	}
	if len(c.args) < 2 || c.args[1] == "-" {
		if isTerminal(1) {
			return errors.New("diff: refusing to write a tarball to a terminal (give a FILE or redirect stdout)")
		}
		w := withProgressWriter("diff "+short(id), os.Stdout)
		err := c.store.Diff(id, w)
		doneProgress(w)
		return err
	}
	// Written beside its name and renamed: a failed diff leaves no half tarball.
	out := c.args[1]
	f, err := os.CreateTemp(dirOf(out), ".ovlctl-diff-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	w := withProgressWriter("diff "+short(id), f)
	err = c.store.Diff(id, w)
	doneProgress(w)
	if err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	os.Chmod(f.Name(), 0o644)
	return os.Rename(f.Name(), out)
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		if i == 0 {
			return "/"
		}
		return p[:i]
	}
	return "."
}

func cmdImport(c *command) error {
	progress := func(what string, r io.Reader) io.Reader {
		size := int64(-1)
		if s, ok := r.(interface{ Size() int64 }); ok {
			size = s.Size()
		}
		return withProgress(what, r, size)
	}
	var imgs []layout.Image
	var err error
	if c.args[0] == "-" {
		imgs, err = c.store.ImportStream(os.Stdin, c.name, progress)
	} else {
		imgs, err = c.store.Import(c.args[0], c.name, progress)
	}
	finishProgress()
	if err != nil {
		return err
	}
	for _, im := range imgs {
		fmt.Printf("%s %s %s\n", im.Name, im.ID, im.Top)
	}
	return nil
}

// imageRow is one image as `images` shows it.
type imageRow struct {
	layout.Image
	Size int64 `json:"size"` // the disk use of its layers
}

func cmdImages(c *command) error {
	imgs, err := c.store.Images()
	if err != nil {
		return err
	}
	rows := []imageRow{}
	sizes := map[string]int64{}
	for _, im := range imgs {
		var total int64
		for _, id := range im.Layers {
			sz, ok := sizes[id]
			if !ok {
				if sz, err = c.store.LayerSize(id); err != nil {
					return err
				}
				sizes[id] = sz
			}
			total += sz
		}
		rows = append(rows, imageRow{Image: im, Size: total})
	}
	if c.json {
		return printJSON(rows)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIMAGE ID\tTOP LAYER\tLAYERS\tCREATED\tSIZE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.Name, c.id(strings.TrimPrefix(r.ID, "sha256:")), c.id(r.Top), len(r.Layers), layout.Ago(r.Created, now), human(r.Size))
	}
	return tw.Flush()
}

func short(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func cmdRmi(c *command) error {
	removed, err := c.store.RemoveImage(c.args[0])
	for _, id := range removed {
		fmt.Println("removed layer " + id)
	}
	return err
}

func cmdPrune(c *command) error {
	removed, freed, err := c.store.Prune()
	for _, id := range removed {
		fmt.Println("removed layer " + id)
	}
	if err != nil {
		return err
	}
	fmt.Printf("freed %s\n", human(freed))
	return nil
}

func cmdMount(c *command) error {
	id, err := c.layer(c.args[0])
	if err != nil {
		return err
	}
	o := layout.MountOptions{Driver: c.driver, RO: c.ro}
	if len(c.args) > 1 {
		o.Path = c.args[1]
	}
	mnt, err := c.store.Get(id, o)
	if err != nil {
		return err
	}
	fmt.Println(mnt)
	return nil
}

func cmdUmount(c *command) error {
	id, err := c.layer(c.args[0])
	if err != nil {
		return err
	}
	return c.store.Put(id)
}

func cmdRm(c *command) error {
	id, err := c.layer(c.args[0])
	if err != nil {
		return err
	}
	return c.store.Remove(id, c.force)
}

func cmdLs(c *command) error {
	ls, err := c.store.LayersWithUsers()
	if err != nil {
		return err
	}
	if c.json {
		if ls == nil {
			ls = []*layout.Layer{}
		}
		return printJSON(ls)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPARENT\tDEPTH\tCOMMITTED\tMOUNTED\tUSED BY")
	for _, l := range ls {
		mounted := "-"
		if l.Mounted {
			mounted = l.MountPoint
		}
		var by []string
		for _, im := range l.Images {
			by = append(by, "image "+im)
		}
		for _, ct := range l.Containers {
			by = append(by, "container "+c.id(ct))
		}
		used := strings.Join(by, ", ")
		if used == "" {
			used = "-"
		}
		parent := "-"
		if l.Parent != "" {
			parent = c.id(l.Parent)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%s\t%s\n", c.id(l.ID), parent, l.Depth(), l.Committed, mounted, used)
	}
	return tw.Flush()
}

func cmdInspect(c *command) error {
	var ids []string
	for _, a := range c.args {
		id, err := c.layer(a)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	infos, err := c.store.Inspect(ids...)
	if err != nil {
		return err
	}
	return printJSON(infos)
}

func cmdDf(c *command) error {
	u, err := c.store.DiskUsage()
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(u)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE")
	for _, r := range []struct {
		name string
		t    layout.TypeUsage
	}{{"Images", u.Images}, {"Containers", u.Containers}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", r.name, r.t.Total, r.t.Active, human(r.t.Size), percent(r.t.Reclaimable, r.t.Size))
	}
	fmt.Fprintf(tw, "Layers\t%d\t%d\t%s\t%s\n", len(u.Layers), len(u.Layers)-unused(u), human(u.Total), percent(u.Reclaimable, u.Total))
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "LAYER\tSIZE\tIMAGES\tCONTAINERS\tCHILDREN\tIN USE")
	sort.SliceStable(u.Layers, func(i, j int) bool { return u.Layers[i].Size > u.Layers[j].Size })
	for _, l := range u.Layers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%v\n", c.id(l.ID), human(l.Size), len(l.Images), len(l.Containers), l.Children, l.InUse)
	}
	return tw.Flush()
}

func unused(u *layout.Usage) int {
	n := 0
	for _, l := range u.Layers {
		if !l.InUse {
			n++
		}
	}
	return n
}

// percent is docker's "1.2GiB (45%)".
func percent(n, of int64) string {
	if of == 0 {
		return human(n)
	}
	return fmt.Sprintf("%s (%d%%)", human(n), n*100/of)
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f, i := float64(n), -1
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f%ciB", f, "KMGTP"[i])
}

func cmdInit(c *command) error {
	parent := ""
	if c.parent != "" {
		p, err := c.layer(c.parent)
		if err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		parent = p
	}
	id, err := c.store.InitLayer(c.args[0], parent)
	if err != nil {
		return err
	}
	fmt.Println(id)
	return nil
}

func cmdCheck(c *command) error {
	faults, err := c.store.Check(c.repair)
	if err != nil {
		return err
	}
	if c.json {
		if faults == nil {
			faults = []layout.Fault{}
		}
		if err := printJSON(faults); err != nil {
			return err
		}
	} else {
		for _, f := range faults {
			fmt.Println(f)
		}
		if len(faults) == 0 {
			fmt.Println("no faults")
		}
	}
	for _, f := range faults {
		if !f.Repaired {
			if c.json {
				return errExit(1)
			}
			return fmt.Errorf("check: %d fault(s) not repaired%s", unrepaired(faults), hint(c.repair))
		}
	}
	return nil
}

func unrepaired(fs []layout.Fault) int {
	n := 0
	for _, f := range fs {
		if !f.Repaired {
			n++
		}
	}
	return n
}

func hint(repair bool) string {
	if repair {
		return ""
	}
	return " (ovlctl check --repair fixes what it can)"
}
