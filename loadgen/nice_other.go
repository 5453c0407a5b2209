//go:build !linux

package loadgen

import "os/exec"

// startNiced starts cmd; outside Linux its priority is left as it is.
func startNiced(cmd *exec.Cmd, _ int) error { return cmd.Start() }
