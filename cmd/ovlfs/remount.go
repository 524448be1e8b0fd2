package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// remountFlags are the generic options a remount can change, as mount(2)
// flags.
var remountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV,
	"noexec": unix.MS_NOEXEC, "noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME,
	"relatime": unix.MS_RELATIME, "strictatime": unix.MS_STRICTATIME, "lazytime": unix.MS_LAZYTIME,
}

// remount changes the flags (ro/rw, nosuid, ...) of the live ovlfs mount at
// o.Mountpoint, as `mount -o remount` does for the kernel overlay: mount(8)
// runs mount.fuse3, which runs ovlfs with -o remount. No second daemon is
// started; the layers of the live mount stay as they are.
func remount(o *options) error {
	mnt, err := filepath.Abs(o.Mountpoint)
	if err == nil {
		mnt, err = filepath.EvalSymlinks(mnt)
	}
	if err != nil {
		return fmt.Errorf("remount %s: %v", o.Mountpoint, err)
	}
	fstype, err := mountType(mnt)
	if err != nil {
		return fmt.Errorf("remount %s: %v", mnt, err)
	}
	if fstype != "fuse.ovlfs" && fstype != "fuse.fuse-overlayfs" {
		return fmt.Errorf("remount %s: not an ovlfs mount (type %q)", mnt, fstype)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("remount %s: needs root (fusermount3 cannot remount); unmount and mount again", mnt)
	}
	flags := uintptr(unix.MS_REMOUNT)
	for _, k := range o.Kernel {
		f, ok := remountFlags[k]
		if !ok {
			return fmt.Errorf("remount %s: option %s cannot be changed on a live mount", mnt, k)
		}
		flags |= f
	}
	if err := unix.Mount("", mnt, "", flags, ""); err != nil {
		return fmt.Errorf("remount %s: %v", mnt, err)
	}
	return nil
}

// mountType returns the type of the mount whose mount point is mnt (the
// last one mounted there), from /proc/self/mountinfo.
func mountType(mnt string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	typ := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || unescapeMountinfo(fields[4]) != mnt {
			continue
		}
		for i := 6; i < len(fields)-1; i++ {
			if fields[i] == "-" {
				typ = fields[i+1]
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if typ == "" {
		return "", errors.New("not a mount point")
	}
	return typ, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a
// mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] >= '0' && s[i+1] <= '3' {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
