// Command ovlfs mounts an overlay file system in user space. Its command line
// is the one of fuse-overlayfs, so that Podman, Buildah, CRI-O and mount.fuse3
// can run it unchanged; see docs/cli.md.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// version is set by the Makefile (-ldflags "-X main.version=...").
var version = ""

func main() {
	os.Exit(run())
}

func run() int {
	o, err := parseArgs(os.Args[1:])
	if err != nil {
		return fail(err)
	}
	if o.Help {
		fmt.Print(usage)
		return 0
	}
	if o.Version {
		printVersion()
		return 0
	}
	for _, u := range o.Unknown {
		fmt.Fprintf(os.Stderr, "ovlfs: unknown option ignored: %s\n", oneLine(u))
	}
	if o.Remount {
		if err := remount(o); err != nil {
			return fail(err)
		}
		return 0
	}
	fd, isDaemon := daemonFD()
	// The daemon gets the paths its parent resolved and checked.
	if !isDaemon || !o.takeResolved() {
		if err := o.resolve(); err != nil {
			return fail(err)
		}
	}

	if isDaemon {
		os.Unsetenv(daemonEnv)
		// Started as /proc/self/exe, the daemon's name would be "exe": it
		// is "ovlfs" in ps and pgrep, whatever name the caller used.
		os.WriteFile("/proc/self/comm", []byte("ovlfs"), 0)
		return runDaemon(o, fd)
	}
	if !o.Foreground {
		if err := spawnDaemon(o); err != nil {
			return fail(err)
		}
		return 0
	}
	if err := serve(o, nil); err != nil {
		return fail(err)
	}
	return 0
}

// runDaemon is the background process: it reports the mount's outcome on fd
// and serves.
func runDaemon(o *options, fd int) int {
	// Helpers (fusermount3) must not hold the parent's pipe open.
	syscall.CloseOnExec(fd)
	pipe := os.NewFile(uintptr(fd), "report")
	report := func(err error) {
		msg := "ok\n"
		if err != nil {
			msg = err.Error() + "\n"
		}
		pipe.WriteString(msg)
		pipe.Close()
	}
	if err := serve(o, report); err != nil {
		return 1
	}
	return 0
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "ovlfs: %s\n", oneLine(strings.TrimSpace(err.Error())))
	return 1
}

func printVersion() {
	v, fuseV := version, "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == "github.com/hanwen/go-fuse/v2" {
				fuseV = d.Version
				if d.Replace != nil {
					fuseV = d.Replace.Version
				}
			}
		}
	}
	if v == "" {
		v = "dev"
	}
	fmt.Printf("ovlfs version %s\ngo-fuse version %s\n", v, fuseV)
}

// oneLine keeps a message on one line: control characters in it (a path with a
// newline, say) are written as Go escapes, so that callers reading stderr by
// lines get one line per error.
func oneLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			b.WriteString(strings.Trim(strconv.QuoteRune(r), "'"))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
