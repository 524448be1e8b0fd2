package cow

import (
	"bytes"

	"golang.org/x/sys/unix"
)

// The overlay file handle that X(origin) holds, as the kernel writes it with its
// default uuid=null: version 0, magic 0xfb, total length, flags, handle type, a
// zero filesystem uuid, then the filesystem's own handle bytes.
const (
	fhVersion = 0
	fhMagic   = 0xfb
	fhHeader  = 5 + 16
)

// Origin returns the X(origin) value naming entry name of directory dfd, or nil
// when its filesystem cannot make file handles (X(origin) is optional).
func Origin(dfd int, name string) []byte {
	fh, _, err := unix.NameToHandleAt(dfd, name, 0)
	if err != nil || fh.Type() > 0xff || fhHeader+fh.Size() > 0xff {
		return nil
	}
	fid := fh.Bytes()
	v := make([]byte, fhHeader, fhHeader+len(fid))
	v[0], v[1], v[2], v[3], v[4] = fhVersion, fhMagic, byte(fhHeader+len(fid)), 0, byte(fh.Type())
	return append(v, fid...)
}

// SameOrigin reports whether the X(origin) value v names the entry name of dfd:
// the same handle type and handle bytes (the uuid is not compared: the kernel
// writes it zero by default).
func SameOrigin(v []byte, dfd int, name string) bool {
	if len(v) < fhHeader || v[0] != fhVersion || v[1] != fhMagic || int(v[2]) != len(v) {
		return false
	}
	fh, _, err := unix.NameToHandleAt(dfd, name, 0)
	if err != nil {
		return false
	}
	return int32(v[4]) == fh.Type() && bytes.Equal(v[fhHeader:], fh.Bytes())
}

// OriginHandle returns the filesystem's file handle inside the X(origin) value
// v, for open_by_handle_at.
func OriginHandle(v []byte) (unix.FileHandle, bool) {
	if len(v) <= fhHeader || v[0] != fhVersion || v[1] != fhMagic || int(v[2]) != len(v) {
		return unix.FileHandle{}, false
	}
	return unix.NewFileHandle(int32(v[4]), v[fhHeader:]), true
}
