//go:build !linux

package localenv

import "syscall"

func setParentDeathSignal(*syscall.SysProcAttr) {}
