package fs

import (
	"hash/fnv"
	"slices"

	"golang.org/x/sys/unix"
)

// dirIndex records which names each lower layer of a merged directory holds,
// as sorted 64-bit hashes: a lookup then skips, without a system call, every
// layer that cannot have the name, which is what makes deep stacks and
// negative lookups cheap. Lower layers do not change while mounted; the upper
// layer is never indexed. A hash collision only costs the system call the
// index saves.
type dirIndex struct {
	layers map[int32][]uint64
}

func nameHash(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// mayHold reports whether lower layer li may hold name. Layers the index
// does not know may hold anything; a nil index knows no layer.
func (x *dirIndex) mayHold(li int32, name string) bool {
	if x == nil {
		return true
	}
	hs, ok := x.layers[li]
	if !ok {
		return true
	}
	_, found := slices.BinarySearch(hs, nameHash(name))
	return found
}

// index returns n's index of its lower layers, building it on first use; nil
// when n is not a directory or an index could not be made.
func (n *node) index() *dirIndex {
	if x := n.idx.Load(); x != nil {
		return x
	}
	if !n.isDir {
		return nil
	}
	x := &dirIndex{layers: map[int32][]uint64{}}
	for _, e := range n.entries() {
		l := n.root.layers[e.layer]
		if l.upper {
			continue
		}
		p, errno := n.pathOf(e)
		if errno != 0 {
			return nil
		}
		fd, err := l.openDir(p)
		if err != nil {
			return nil
		}
		ents, err := readDirents(fd)
		unix.Close(fd)
		if err != nil {
			return nil
		}
		hs := make([]uint64, 0, len(ents))
		for _, d := range ents {
			hs = append(hs, nameHash(d.name))
		}
		slices.Sort(hs)
		x.layers[e.layer] = hs
	}
	n.idx.Store(x)
	return x
}
