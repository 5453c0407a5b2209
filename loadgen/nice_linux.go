package loadgen

import (
	"os/exec"
	"runtime"
	"syscall"
)

// startNiced starts cmd with its niceness raised by nice. Linux keeps a
// niceness per thread and a new process inherits its parent thread's, so
// cmd is started from a thread of its own whose niceness was raised
// first; that thread is never unlocked, so the runtime drops it (an
// unprivileged process cannot lower a niceness again).
func startNiced(cmd *exec.Cmd, nice int) error {
	if nice == 0 {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), nice); err != nil {
			errc <- err
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}
