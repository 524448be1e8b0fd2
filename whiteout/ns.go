package whiteout

import (
	"bytes"
	"os"
)

// DefaultNS is Trusted for a process that is root in the initial user
// namespace (it may write trusted.* xattrs) and User otherwise, as the
// kernel's userxattr format.
func DefaultNS() NS {
	if os.Geteuid() == 0 && InitUserNS() {
		return Trusted
	}
	return User
}

// InitUserNS reports whether the process runs in the initial user namespace.
func InitUserNS() bool {
	m, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := bytes.Fields(m)
	return len(f) == 3 && string(f[0]) == "0" && string(f[1]) == "0" && string(f[2]) == "4294967295"
}
