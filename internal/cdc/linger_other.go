//go:build !linux

package cdc

import "syscall"

// inq cannot tell what waits in a socket here: the reader never lingers.
func inq(syscall.RawConn) (int, bool) { return 0, false }
