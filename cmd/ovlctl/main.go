// Command ovlctl manages an overlay2 layer store (../shared/SPEC.md, "Docker
// overlay2 store"): layers, OCI/Docker layer tarballs, images, and mounts with
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

	"github.com/spf13/pflag"

	"github.com/ovlfs/ovlfs/layout"
)

var version = "dev"

const usage = `usage: ovlctl [--root DIR] COMMAND [ARGS]

commands:
  create [--parent ID] [ID]        make a layer; prints its id
  apply ID [FILE|-]                extract a layer tarball (tar, gzip, zstd) into an empty layer
  diff ID [FILE|-]                 write the layer's changes as an OCI layer tarball
  import IMAGE.tar [--name NAME]   import a docker/podman save or OCI layout archive
  images [--json]                  list imported images
  mount ID [--driver auto|kernel|fuse] [--ro] [PATH]
                                   mount a layer; prints the mount point last
  umount ID                        unmount a layer
  rm ID [--force]                  remove a layer (--force unmounts it, drops its image)
  ls [--json]                      list layers
  inspect ID                       LowerDir/UpperDir/WorkDir/MergedDir as JSON
  df [--json]                      disk use: shared, unique, reclaimable
  init ID [--parent ID]            make ID-init (container init files) and ID on it
  check [--repair] [--json]        find (and fix) what breaks mounts

--root defaults to /var/lib/ovlfs for root, $XDG_DATA_HOME/ovlfs otherwise.
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		fmt.Fprintln(os.Stderr, "ovlctl: "+msg)
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
			fmt.Print(usage)
			return nil
		case a == "--version":
			fmt.Println("ovlctl", version)
			return nil
		case a == "--root" && len(args) > 1:
			root, args = args[1], args[2:]
		case strings.HasPrefix(a, "--root="):
			root, args = strings.TrimPrefix(a, "--root="), args[1:]
		default:
			return fmt.Errorf("unknown flag %s (ovlctl --help)", a)
		}
	}
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command")
	}
	cmd, args := args[0], args[1:]
	fs := pflag.NewFlagSet(cmd, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&root, "root", root, "store directory")
	c := &command{fs: fs}
	switch cmd {
	case "create":
		return c.run(args, 0, 1, cmdCreate, "parent")
	case "apply":
		return c.run(args, 1, 2, cmdApply)
	case "diff":
		return c.run(args, 1, 2, cmdDiff)
	case "import":
		return c.run(args, 1, 1, cmdImport, "name")
	case "images":
		return c.run(args, 0, 0, cmdImages, "json")
	case "mount":
		return c.run(args, 1, 2, cmdMount, "driver", "ro")
	case "umount", "unmount":
		return c.run(args, 1, 1, cmdUmount)
	case "rm":
		return c.run(args, 1, 1, cmdRm, "force")
	case "ls":
		return c.run(args, 0, 0, cmdLs, "json")
	case "inspect":
		return c.run(args, 1, 1, cmdInspect)
	case "df":
		return c.run(args, 0, 0, cmdDf, "json")
	case "init":
		return c.run(args, 1, 1, cmdInit, "parent")
	case "check":
		return c.run(args, 0, 0, cmdCheck, "repair", "json")
	case "help":
		fmt.Print(usage)
		return nil
	}
	return fmt.Errorf("unknown command %q (ovlctl --help)", cmd)
}

// command is one parsed command line.
type command struct {
	fs     *pflag.FlagSet
	args   []string
	store  *layout.Store
	parent string
	name   string
	driver string
	json   bool
	ro     bool
	force  bool
	repair bool
}

// run parses the command's flags (only those named), checks the number of
// arguments, opens the store and runs fn.
func (c *command) run(args []string, minArgs, maxArgs int, fn func(*command) error, flags ...string) error {
	for _, f := range flags {
		switch f {
		case "parent":
			c.fs.StringVar(&c.parent, "parent", "", "parent layer")
		case "name":
			c.fs.StringVar(&c.name, "name", "", "image name")
		case "driver":
			c.fs.StringVar(&c.driver, "driver", layout.DriverAuto, "auto, kernel or fuse")
		case "json":
			c.fs.BoolVar(&c.json, "json", false, "JSON output")
		case "ro":
			c.fs.BoolVar(&c.ro, "ro", false, "read-only")
		case "force":
			c.fs.BoolVar(&c.force, "force", false, "unmount first")
		case "repair":
			c.fs.BoolVar(&c.repair, "repair", false, "fix what is found")
		}
	}
	if err := c.fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %v", c.fs.Name(), err)
	}
	c.args = c.fs.Args()
	if len(c.args) < minArgs || len(c.args) > maxArgs {
		return fmt.Errorf("%s: wrong number of arguments (ovlctl --help)", c.fs.Name())
	}
	root, _ := c.fs.GetString("root")
	if root == "" {
		root = layout.DefaultRoot()
	}
	s, err := layout.Open(root)
	if err != nil {
		return err
	}
	defer s.Close()
	c.store = s
	return fn(c)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdCreate(c *command) error {
	id := ""
	if len(c.args) > 0 {
		id = c.args[0]
	}
	id, err := c.store.Create(id, c.parent)
	if err != nil {
		return err
	}
	fmt.Println(id)
	return nil
}

func cmdApply(c *command) error {
	in, size, closeIn, err := openInput(c.args)
	if err != nil {
		return err
	}
	defer closeIn()
	r := withProgress("apply "+c.args[0], in, size)
	ap, err := c.store.ApplyDiff(c.args[0], r)
	doneProgress(r)
	if err != nil {
		return err
	}
	if err := c.store.RecordDiffID(c.args[0], ap.DiffID); err != nil {
		return err
	}
	fmt.Println(ap.DiffID)
	return nil
}

// openInput opens FILE, or stdin for "-" or no file.
func openInput(args []string) (io.Reader, int64, func(), error) {
	if len(args) < 2 || args[1] == "-" {
		return os.Stdin, -1, func() {}, nil
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
	if len(c.args) < 2 || c.args[1] == "-" {
		if isTerminal(1) {
			return errors.New("diff: refusing to write a tarball to a terminal (give a FILE or redirect stdout)")
		}
		return c.store.Diff(c.args[0], os.Stdout)
	}
	// Written beside its name and renamed: a failed diff leaves no half tarball.
	out := c.args[1]
	f, err := os.CreateTemp(dirOf(out), ".ovlctl-diff-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := c.store.Diff(c.args[0], f); err != nil {
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
	imgs, err := c.store.Import(c.args[0], c.name, progress)
	finishProgress()
	if err != nil {
		return err
	}
	for _, im := range imgs {
		fmt.Printf("%s %s %s\n", im.Name, im.ID, im.Top)
	}
	return nil
}

func cmdImages(c *command) error {
	imgs, err := c.store.Images()
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(imgs)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tLAYERS\tTOP")
	for _, im := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", im.Name, short(im.ID), len(im.Layers), short(im.Top))
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

func cmdMount(c *command) error {
	o := layout.MountOptions{Driver: c.driver, RO: c.ro}
	if len(c.args) > 1 {
		o.Path = c.args[1]
	}
	mnt, err := c.store.Get(c.args[0], o)
	if err != nil {
		return err
	}
	fmt.Println(mnt)
	return nil
}

func cmdUmount(c *command) error { return c.store.Put(c.args[0]) }

func cmdRm(c *command) error { return c.store.Remove(c.args[0], c.force) }

func cmdLs(c *command) error {
	ls, err := c.store.Layers()
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
	fmt.Fprintln(tw, "ID\tPARENT\tDEPTH\tCOMMITTED\tMOUNTED")
	for _, l := range ls {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%s\n", l.ID, l.Parent, l.Depth(), l.Committed, l.Mounted)
	}
	return tw.Flush()
}

func cmdInspect(c *command) error {
	p, err := c.store.Inspect(c.args[0])
	if err != nil {
		return err
	}
	return printJSON(p)
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
	fmt.Fprintln(tw, "LAYER\tSIZE\tIMAGES\tCHILDREN\tIN USE")
	sort.Slice(u.Layers, func(i, j int) bool { return u.Layers[i].Size > u.Layers[j].Size })
	for _, l := range u.Layers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%v\n", short(l.ID), human(l.Size), len(l.Images), l.Children, l.InUse)
	}
	fmt.Fprintf(tw, "\nTOTAL\t%s\n", human(u.Total))
	fmt.Fprintf(tw, "SHARED\t%s\t(in two or more images)\n", human(u.Shared))
	fmt.Fprintf(tw, "UNIQUE\t%s\t(in one image)\n", human(u.Unique))
	fmt.Fprintf(tw, "RECLAIMABLE\t%s\t(no image, no mount uses them)\n", human(u.Reclaimable))
	return tw.Flush()
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
	id, err := c.store.InitLayer(c.args[0], c.parent)
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
				os.Exit(1)
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
