package localenv

import "syscall"

// setParentDeathSignal makes Linux send SIGTERM to the child if the demo or benchmark dies
// without stopping it (kill -9), so no relay or sink is left behind.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGTERM }
