package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// With CeilingOwnProcess a ceiling server runs in a process of its own, as
// a collector does, at a lower scheduling priority than the load
// generator.
//
// In one process the generator's goroutines and the server's share Go's
// scheduler: a goroutine made ready by the network waits until a P runs out
// of other work (or for sysmon, up to 10 ms), so the generator's timers and
// reads wait behind the server's work and its lateness is measured as the
// server's latency. In two processes at the same priority the kernel does
// the same to the generator's threads. The lower priority gives the
// generator the CPU at once when it needs it, as if it ran on a machine of
// its own, while the CPU it uses is still taken from the two cores the
// server has.

// ceilingCommand is the hidden command that serves a ceiling for a load
// generator in another process: `veil-loadgen ceiling KIND`.
const ceilingCommand = "ceiling"

// ServeCeiling runs the ceiling server kind in this process for a load
// generator in another, whose events carry token. It writes the server's base URL on a line to out,
// then reads commands from in, one a line, answering each on a line of out
// ("ok" or "error: …"): "profile FILE" starts a CPU profile of this process
// in FILE, "stop-profile" ends it. When in ends, or ctx does, it stops the
// server and returns.
func ServeCeiling(ctx context.Context, kind, token string, in io.Reader, out io.Writer) error {
	srv, err := startCeiling(ctx, kind, token, nil)
	if err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var stopProfile func() error // set while a profile runs
	endProfile := func() error {
		if stopProfile == nil {
			return nil
		}
		err := stopProfile()
		stopProfile = nil
		return err
	}
	_, err = fmt.Fprintln(out, srv.target)
	for err == nil {
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-ctx.Done():
		}
		if !ok {
			break
		}
		var cerr error
		switch cmd, arg, _ := strings.Cut(line, " "); {
		case cmd == "profile" && arg != "" && stopProfile == nil:
			stopProfile, cerr = startCPUProfile(arg)
		case cmd == "stop-profile":
			cerr = endProfile()
		default:
			cerr = errors.New("unknown command")
		}
		if cerr != nil {
			_, err = fmt.Fprintln(out, "error:", cerr)
		} else {
			_, err = fmt.Fprintln(out, "ok")
		}
	}
	perr := endProfile()
	return errors.Join(err, perr, srv.stop())
}

// spawnCeiling starts the ceiling server kind for events carrying token in
// a process of its own with the given niceness, runs ServeCeiling there,
// and returns once it serves. command makes the process's command; nil
// runs this executable's `ceiling` command.
func spawnCeiling(kind, token string, nice int, command func(kind, token string) (*exec.Cmd, error), stderr io.Writer) (*server, error) {
	if command == nil {
		command = selfCeiling
	}
	cmd, err := command(kind, token)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := startNiced(cmd, nice); err != nil {
		return nil, fmt.Errorf("loadgen: starting the %s ceiling: %w", kind, err)
	}
	exited := make(chan error, 1)
	answers := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			answers <- sc.Text()
		}
		close(answers)
		exited <- cmd.Wait()
	}()
	stop := func() error {
		stdin.Close()
		go func() {
			for range answers { // until the process closes its stdout
			}
		}()
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("the %s ceiling did not stop within 30s", kind)
		}
	}
	// ask sends a command and waits for its answer.
	ask := func(line string) error {
		if _, err := fmt.Fprintln(stdin, line); err != nil {
			return err
		}
		var a string
		var ok bool
		select {
		case a, ok = <-answers:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("the %s ceiling did not answer %q within 30s", kind, line)
		}
		switch {
		case !ok:
			return errors.New("the ceiling server has exited")
		case a != "ok":
			return errors.New(strings.TrimPrefix(a, "error: "))
		}
		return nil
	}
	var target string
	select {
	case target = <-answers:
	case <-time.After(60 * time.Second):
	}
	if !strings.HasPrefix(target, "http://") {
		serr := stop()
		return nil, fmt.Errorf("loadgen: the %s ceiling did not start: %v", kind, serr)
	}
	return &server{
		target: target,
		stop:   stop,
		profile: func(path string) error {
			return ask("profile " + path)
		},
		stopProfile: func() error { return ask("stop-profile") },
	}, nil
}

// selfCeiling runs this executable's `ceiling` command.
func selfCeiling(kind, token string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return exec.Command(exe, ceilingCommand, kind, "--token", token), nil
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
