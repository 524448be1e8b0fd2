package fs

import (
	"os"
	"strconv"
	"strings"
)

// IDMap is one range of uidmapping= or gidmapping=, as fuse-overlayfs reads
// "A:B:N": on-disk IDs A..A+N-1 show as B..B+N-1 through the mount.
// containers/storage sends A = the container's ID, B = the host's.
type IDMap struct {
	Disk, View, Size uint32
}

// idMapper translates owners between the disk and what clients see.
type idMapper struct {
	uids, gids             []IDMap
	squashUID, squashGID   *uint32
	overflowUID, overflowG uint32
}

func newIDMapper(cfg *Config) *idMapper {
	if len(cfg.UIDMap) == 0 && len(cfg.GIDMap) == 0 && cfg.SquashUID == nil && cfg.SquashGID == nil {
		return nil // the common case: owners pass unchanged
	}
	return &idMapper{
		uids: cfg.UIDMap, gids: cfg.GIDMap,
		squashUID: cfg.SquashUID, squashGID: cfg.SquashGID,
		overflowUID: overflowID("/proc/sys/kernel/overflowuid"),
		overflowG:   overflowID("/proc/sys/kernel/overflowgid"),
	}
}

func overflowID(file string) uint32 {
	b, err := os.ReadFile(file)
	if err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			return uint32(n)
		}
	}
	return 65534
}

func mapID(id uint32, ranges []IDMap, toView bool, overflow uint32) uint32 {
	if len(ranges) == 0 {
		return id
	}
	for _, r := range ranges {
		from, to := r.View, r.Disk
		if toView {
			from, to = r.Disk, r.View
		}
		if id >= from && id-from < r.Size {
			return to + (id - from)
		}
	}
	return overflow // an ID outside every range
}

// view maps an on-disk owner to the one clients see.
func (m *idMapper) view(uid, gid uint32) (uint32, uint32) {
	if m == nil {
		return uid, gid
	}
	uid, gid = mapID(uid, m.uids, true, m.overflowUID), mapID(gid, m.gids, true, m.overflowG)
	if m.squashUID != nil {
		uid = *m.squashUID
	}
	if m.squashGID != nil {
		gid = *m.squashGID
	}
	return uid, gid
}

// disk maps a client's owner (of a request or a chown) to the on-disk one.
func (m *idMapper) disk(uid, gid uint32) (uint32, uint32) {
	if m == nil {
		return uid, gid
	}
	return mapID(uid, m.uids, false, m.overflowUID), mapID(gid, m.gids, false, m.overflowG)
}

// squashed reports whether owners are squashed: chown through the mount then
// cannot be seen and its errors are not the client's business.
func (m *idMapper) squashed() bool {
	return m != nil && (m.squashUID != nil || m.squashGID != nil)
}
