//go:build linux

package cdc

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// inq returns the number of bytes waiting to be read from raw's socket
// (SIOCINQ, the same request as TIOCINQ).
func inq(raw syscall.RawConn) (int, bool) {
	var n int
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil || ierr != nil {
		return 0, false
	}
	return n, true
}
