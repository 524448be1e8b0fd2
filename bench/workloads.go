package main

// kind is what a workload measures.
type kind int

const (
	wallTime  kind = iota // the run snippet's wall time, in seconds
	mountTime             // the mount command's wall time, in ms
	daemonRSS             // the daemon's VmHWM after the run, and VmRSS after drop_caches, in MiB
)

// workload is one line of the table (one per mode). Its snippets are bash,
// run in the mount point with $M (the mount), $D (the data dir) and $BENCH
// (ovlbench itself, for its lstat helper) set. Only run is timed; it runs
// pinned, as do setup and teardown.
type workload struct {
	name     string
	data     string   // the dataset (see data.go)
	modes    []string // "warm": caches filled by an untimed run first; "cold": drop_caches + fresh mount
	quick    []string // the modes make bench-quick runs (none: not in the quick subset)
	mutates  bool     // every run gets a fresh upper and mount
	kind     kind
	warmup   string // mutating warm runs: what to read besides the lower layers before the run
	setup    string // untimed, before each run
	run      string
	teardown string // untimed, after each run
}

var (
	warmCold = []string{"warm", "cold"}
	warm     = []string{"warm"}
	cold     = []string{"cold"}
)

// chroot workloads need /dev and /proc in the mount, and the rootfs's PATH.
const (
	bindSys   = `mount --bind /dev dev && mount -t proc proc proc`
	unbindSys = `umount proc dev`
	chrootEnv = `chroot . /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin `
)

var workloads = []*workload{
	{name: "find -printf, rootfs", data: "rootfs", modes: warmCold, quick: warmCold,
		run: `find . -printf '%y %m %U %G %s %T@ %p\n' >/dev/null`},
	{name: "ls -lR, rootfs", data: "rootfs", modes: warmCold, quick: warm,
		run: `ls -lR . >/dev/null`},
	{name: "read all files (tar), rootfs", data: "rootfs", modes: warmCold,
		run: `tar -cf - . | cat >/dev/null`}, // tar reads nothing when it writes to /dev/null itself
	{name: "dd read 1 GiB lower file", data: "big", modes: warmCold, quick: warm,
		run: `dd if=big of=/dev/null bs=1M status=none`},
	{name: "fio 4k randread, 64 MiB of 1 GiB", data: "big", modes: warmCold,
		run: `fio --name=randread --filename=big --rw=randread --bs=4k --io_size=64m --ioengine=psync --invalidate=0 --randrepeat=1 --norandommap --output=/dev/null`},
	{name: "fio 4k randwrite, 64 MiB of 256 MiB", data: "big", modes: warm, mutates: true,
		setup: `dd if=/dev/zero of=fio.dat bs=1M count=256 status=none`,
		run:   `fio --name=randwrite --filename=fio.dat --rw=randwrite --bs=4k --size=256m --io_size=64m --ioengine=psync --invalidate=0 --fallocate=none --randrepeat=1 --norandommap --output=/dev/null`},
	{name: "readdir 100k entries (ls -f)", data: "dir100k", modes: warmCold,
		run: `ls -f d >/dev/null`},
	{name: "ls -l 100k entries", data: "dir100k", modes: warmCold,
		run: `ls -l d >/dev/null`},
	{name: "lstat 10k paths, 3 layers", data: "rootfs", modes: warmCold,
		run: `"$BENCH" lstat "$D/paths10k.txt"`},
	{name: "lstat 10k paths, 53 layers", data: "stack53", modes: warmCold,
		run: `"$BENCH" lstat "$D/paths10k.txt"`},
	{name: "lstat 10k paths, 203 layers", data: "stack203", modes: warmCold, quick: cold,
		run: `"$BENCH" lstat "$D/paths10k.txt"`},
	{name: "10k negative lookups, 3 layers", data: "rootfs", modes: warmCold,
		run: `"$BENCH" lstat -missing "$D/missing10k.txt"`},
	{name: "10k negative lookups, 203 layers", data: "stack203", modes: warmCold, quick: cold,
		run: `"$BENCH" lstat -missing "$D/missing10k.txt"`},
	{name: "copy-up: append 1 byte to 1 GiB", data: "big", modes: warm, mutates: true, quick: warm,
		run: `printf x >>big`},
	{name: "chmod 10k lower files", data: "rootfs", modes: warm, mutates: true,
		run: `xargs -a "$D/paths10k.txt" chmod 600`},
	{name: "rm -rf /usr of the rootfs", data: "rootfs", modes: warm, mutates: true,
		run: `rm -rf usr`},
	{name: "rm -rf 50k-file lower tree", data: "tree50k", modes: warm, mutates: true,
		run: `rm -rf t`},
	{name: "O_TRUNC 1 GiB lower file (: > big)", data: "big", modes: warm, mutates: true, quick: warm,
		run: `: >big`},
	{name: "untar 20k files", data: "rootfs", modes: warm, mutates: true,
		warmup: `cat "$D/untar.tar" >/dev/null`,
		run:    `mkdir untar && tar -xf "$D/untar.tar" -C untar`},
	{name: "1 GiB sequential write", data: "big", modes: warm, mutates: true,
		run: `dd if=/dev/zero of=seq bs=1M count=1024 status=none`},
	{name: "git status, repo in a lower", data: "repo", modes: warmCold,
		run: `GIT_OPTIONAL_LOCKS=0 git -C repo status --porcelain >/dev/null`},
	{name: "python3 imports (chroot)", data: "rootfs", modes: warmCold,
		run: `PYTHONDONTWRITEBYTECODE=1 chroot . /usr/bin/python3 -c 'import json, re, email.parser, http.client, urllib.request, xml.etree.ElementTree, sqlite3, decimal, asyncio, unittest, argparse, logging, csv, tarfile, zipfile, ssl, hashlib, subprocess, dataclasses, typing'`},
	{name: "chroot dpkg -i 8 .debs", data: "rootfs", modes: warm, mutates: true,
		setup: bindSys, teardown: unbindSys,
		run: chrootEnv + `sh -c 'dpkg -i ` + debDir + `/*.deb' >/dev/null`},
	{name: "chroot make -j2 (49 C files)", data: "rootfs", modes: warm, mutates: true,
		setup: bindSys, teardown: unbindSys,
		run: chrootEnv + `make -s -j2 -C ` + makeDir + ` >/dev/null`},
	{name: "mount, 3 layers", data: "rootfs", modes: warm, kind: mountTime, quick: warm},
	{name: "mount, 203 layers", data: "stack203", modes: warm, kind: mountTime, quick: warm},
	{name: "daemon RSS, walk of the rootfs", data: "rootfs", modes: []string{"walk"}, kind: daemonRSS, quick: []string{"walk"},
		run: `find . -printf '%s\n' >/dev/null`},
	{name: "daemon RSS, ls -l of 100k entries", data: "dir100k", modes: []string{"walk"}, kind: daemonRSS,
		run: `ls -l d >/dev/null`},
}
