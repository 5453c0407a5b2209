// Package chserver runs a private clickhouse-server as a child process: the
// ClickHouse of `veil dev` and of the integration tests.
//
// It writes its own config.xml and users.xml into the data directory rather
// than overriding the distribution's files, so it depends only on the
// clickhouse-server binary and never on what /etc/clickhouse-server holds.
package chserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/veilhq/veil/sink"
)

// InstallHint tells a person how to get the server binary.
const InstallHint = "install it with `sudo apt-get update && sudo apt-get install -y clickhouse-server clickhouse-client` (Debian), or run `make run` / `make test`, which do it for you"

// ErrNotInstalled is returned by Find when no clickhouse-server binary exists.
var ErrNotInstalled = errors.New("clickhouse-server not found; " + InstallHint)

// Find returns the path of the clickhouse-server binary.
func Find() (string, error) {
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p, nil
	}
	// Debian puts it in /usr/sbin, which is not on every user's PATH.
	for _, p := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server", "/usr/bin/clickhouse"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", ErrNotInstalled
}

// User is the ClickHouse user Veil itself connects as (schema, writes,
// privacy requests). The server has no `default` user: nothing reaches it
// without a password.
const User = "veil"

// Config says where the server keeps its data and which ports it takes.
// A zero port means "pick a free one".
type Config struct {
	Binary          string // empty: Find()
	Dir             string // data, logs and generated config live here
	TCPPort         int
	HTTPPort        int
	InterserverPort int
	// Password is User's password; empty: a random one, chosen at Start
	// (Server.Password tells it, and Restart keeps it).
	Password string
	// AnalystPassword, when set, creates the read-only `analyst` user.
	AnalystPassword string
	// AnalystLimits bound each of the analyst's queries; zero: sink's
	// defaults.
	AnalystLimits sink.AnalystLimits
	StartTimeout  time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before it kills
	// the server (default 10 s). Running queries are cancelled first, so
	// a clean shutdown takes a second or two; past that, the server is
	// stuck and SIGKILL loses nothing a MergeTree has acknowledged.
	StopTimeout time.Duration
}

// Server is a running clickhouse-server child process.
type Server struct {
	cfg    Config
	cmd    *exec.Cmd
	done   chan struct{}
	waitEr error
	log    *zap.Logger
}

// Start writes the configuration into cfg.Dir, starts the server and waits
// until it answers /ping. A server left behind by an earlier crash on the same
// directory is stopped first, so the data directory is never locked out.
func Start(ctx context.Context, cfg Config, logger *zap.Logger) (*Server, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if cfg.Dir == "" {
		return nil, errors.New("chserver: dir must be set")
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.AnalystLimits == (sink.AnalystLimits{}) {
		cfg.AnalystLimits = sink.DefaultAnalystLimits()
	}
	if err := cfg.AnalystLimits.Validate(); err != nil {
		return nil, fmt.Errorf("chserver: %w", err)
	}
	if cfg.Password == "" {
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		cfg.Password = hex.EncodeToString(b[:])
	}
	if cfg.Binary == "" {
		bin, err := Find()
		if err != nil {
			return nil, err
		}
		cfg.Binary = bin
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	for _, p := range []*int{&cfg.TCPPort, &cfg.HTTPPort, &cfg.InterserverPort} {
		if *p == 0 {
			if *p, err = FreePort(); err != nil {
				return nil, err
			}
		}
	}
	// The directory is the server's alone, whoever made it.
	if err := os.MkdirAll(filepath.Join(dir, "data", "tmp"), 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	killStale(filepath.Join(dir, "clickhouse.pid"), logger)
	if err := writeConfig(cfg); err != nil {
		return nil, err
	}

	cmd := exec.Command(cfg.Binary, "--config-file="+filepath.Join(dir, "config.xml"))
	cmd.Dir = dir
	out, err := os.OpenFile(filepath.Join(dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig: if Veil dies without stopping the server, the kernel stops it,
	// so no clickhouse-server outlives its parent. Setpgid keeps a terminal's
	// Ctrl-C from reaching it before Veil has flushed into it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("chserver: start %s: %w", cfg.Binary, err)
	}
	_ = os.WriteFile(filepath.Join(dir, "clickhouse.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	s := &Server{cfg: cfg, cmd: cmd, done: make(chan struct{}), log: logger}
	go func() { s.waitEr = cmd.Wait(); close(s.done) }()

	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop(context.Background())
		return nil, err
	}
	logger.Info("clickhouse-server started", zap.Int("pid", cmd.Process.Pid), zap.String("native", s.NativeAddr()), zap.String("http", s.HTTPAddr()))
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	url := "http://" + s.HTTPAddr() + "/ping"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("chserver: clickhouse-server exited during start (%v); see %s", s.waitEr, s.ErrorLog())
		case <-ctx.Done():
			return fmt.Errorf("chserver: clickhouse-server not ready after %s; see %s", s.cfg.StartTimeout, s.ErrorLog())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NativeAddr is the host:port of the native protocol.
func (s *Server) NativeAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.TCPPort))
}

// HTTPAddr is the host:port of the HTTP interface.
func (s *Server) HTTPAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.cfg.HTTPPort))
}

// ErrorLog is the path of the server's error log.
func (s *Server) ErrorLog() string { return filepath.Join(s.cfg.Dir, "clickhouse-server.err.log") }

// Dir is the server's directory.
func (s *Server) Dir() string { return s.cfg.Dir }

// Pid is the child's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// User is the user Veil connects as; Password is its password.
func (s *Server) User() string     { return User }
func (s *Server) Password() string { return s.cfg.Password }

// Stop cancels the queries still running, asks the server to shut down and
// waits for it; past StopTimeout (or ctx's deadline, if sooner) it is
// killed. A running query would otherwise hold the shutdown up: 18.16
// waits for it before it exits.
func (s *Server) Stop(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	start := time.Now()
	if err := s.killQueries(ctx); err != nil {
		s.log.Warn("could not cancel the running queries before stopping clickhouse-server", zap.Error(err))
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StopTimeout)
	defer cancel()
	select {
	case <-s.done:
	case <-ctx.Done():
		s.log.Warn("clickhouse-server did not stop in time; killing it", zap.Duration("waited", time.Since(start).Round(time.Millisecond)))
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	_ = os.Remove(filepath.Join(s.cfg.Dir, "clickhouse.pid"))
	return nil
}

// killQueries asks the server to cancel every running query and waits,
// briefly, until they have stopped. A server that does not answer (stopped,
// overloaded) is left to SIGTERM and the timeout.
func (s *Server) killQueries(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.HTTPAddr()+"/", strings.NewReader("KILL QUERY WHERE 1 SYNC"))
	if err != nil {
		return err
	}
	req.SetBasicAuth(User, s.cfg.Password)
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("KILL QUERY: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// Kill stops the server at once, as a crash would (for fault tests).
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Restart starts the server again on the same ports and directory after Stop
// or Kill.
func (s *Server) Restart(ctx context.Context) (*Server, error) {
	return Start(ctx, s.cfg, s.log)
}

// killStale stops a clickhouse-server left running on this directory by a
// Veil that was killed before it could stop it.
func killStale(pidFile string, log *zap.Logger) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "clickhouse") {
		return
	}
	log.Warn("stopping a clickhouse-server left over from an earlier run", zap.Int("pid", pid))
	p, _ := os.FindProcess(pid)
	_ = p.Signal(syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if p.Signal(syscall.Signal(0)) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = p.Kill()
}

// FreePort asks the kernel for a free TCP port on loopback.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
