package chcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// ZooKeeperHint tells a person how to get ZooKeeper.
const ZooKeeperHint = "install it with `sudo apt-get update && sudo apt-get install -y zookeeper` (Debian), or run `make test`, which does it for you"

// zkJar is Debian's ZooKeeper jar; its manifest's Class-Path names every
// library it needs (netty, slf4j, jute, …), so it alone makes the classpath.
const zkJar = "/usr/share/java/zookeeper.jar"

const slf4jSimple = "/usr/share/java/slf4j-simple.jar"

// FindZooKeeper returns the java binary and the ZooKeeper jar, or an error
// saying how to install what is missing.
func FindZooKeeper() (java, jar string, err error) {
	java, err = exec.LookPath("java")
	if err != nil {
		return "", "", errors.New("java not found; " + ZooKeeperHint)
	}
	if _, err := os.Stat(zkJar); err != nil {
		return "", "", fmt.Errorf("%s not found; %s", zkJar, ZooKeeperHint)
	}
	return java, zkJar, nil
}

// ZooKeeper is a standalone ZooKeeper server run as a child process, with
// its data under a directory of its own. It can be stopped and started
// again on the same port and data (fault tests stop it under load).
type ZooKeeper struct {
	dir  string
	port int
	log  *zap.Logger

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartZooKeeper writes zoo.cfg into dir and starts the server on port (0:
// a free one), waiting until it serves clients.
func StartZooKeeper(ctx context.Context, dir string, port int, log *zap.Logger) (*ZooKeeper, error) {
	if log == nil {
		log = zap.NewNop()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		if port, err = pickPort(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	// tickTime 2 s lets sessions last 4 to 40 s; clickhouse-server asks
	// for 15 s (config.d/cluster.xml), so a replica killed without closing
	// its session is seen gone, and may come back, within 15 s.
	// The admin server (an HTTP port of its own) is off; `stat` answers the
	// readiness check.
	cfg := fmt.Sprintf(`tickTime=2000
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,mntr
autopurge.purgeInterval=1
`, filepath.Join(dir, "data"), port)
	if err := os.WriteFile(filepath.Join(dir, "zoo.cfg"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	z := &ZooKeeper{dir: dir, port: port, log: log}
	if err := z.Start(ctx); err != nil {
		return nil, err
	}
	return z, nil
}

// Start starts the server after Stop or Kill (or the first time).
func (z *ZooKeeper) Start(ctx context.Context) error {
	java, jar, err := FindZooKeeper()
	if err != nil {
		return err
	}
	killStale(filepath.Join(z.dir, "zookeeper.pid"), "QuorumPeerMain", z.log)
	out, err := os.OpenFile(filepath.Join(z.dir, "zookeeper.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cp := z.dir + ":" + jar
	// Debian's libslf4j-java, where installed, gives ZooKeeper a logger
	// (to zookeeper.log); without it ZooKeeper runs silently.
	if _, err := os.Stat(slf4jSimple); err == nil {
		cp += ":" + slf4jSimple
	}
	// A small heap: the cluster's metadata is a few megabytes.
	cmd := exec.Command(java, "-Xmx256m", "-XX:+UseSerialGC", "-Dzookeeper.admin.enableServer=false",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-Dorg.slf4j.simpleLogger.showDateTime=true",
		"-cp", cp, "org.apache.zookeeper.server.quorum.QuorumPeerMain", filepath.Join(z.dir, "zoo.cfg"))
	cmd.Dir = z.dir
	cmd.Stdout, cmd.Stderr = out, out
	// As with clickhouse-server: the kernel stops ZooKeeper if Veil dies,
	// and a terminal's Ctrl-C reaches Veil only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("chcluster: start ZooKeeper: %w", err)
	}
	_ = os.WriteFile(filepath.Join(z.dir, "zookeeper.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	z.mu.Lock()
	z.cmd, z.done = cmd, done
	z.mu.Unlock()

	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if z.serving() {
			z.log.Info("ZooKeeper started", zap.Int("pid", cmd.Process.Pid), zap.String("addr", z.Addr()))
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("chcluster: ZooKeeper exited during start; see %s", filepath.Join(z.dir, "zookeeper.log"))
		case <-wctx.Done():
			z.Kill()
			return fmt.Errorf("chcluster: ZooKeeper not ready after 60 s; see %s", filepath.Join(z.dir, "zookeeper.log"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// serving reports whether the server serves clients. `ruok` answers imok
// as soon as the process listens, before it serves sessions, and
// clickhouse-server 18.16 crashes when its first ZooKeeper session fails;
// `stat` names the server's mode only once it serves.
func (z *ZooKeeper) serving() bool {
	c, err := net.DialTimeout("tcp", z.Addr(), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("stat")); err != nil {
		return false
	}
	b, _ := io.ReadAll(c)
	return bytes.Contains(b, []byte("Mode: "))
}

// Addr is host:port of the client port.
func (z *ZooKeeper) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(z.port)) }

// Port is the client port.
func (z *ZooKeeper) Port() int { return z.port }

// Pid is the running server's process id, or 0 when it is stopped.
func (z *ZooKeeper) Pid() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.cmd == nil || z.exited() {
		return 0
	}
	return z.cmd.Process.Pid
}

func (z *ZooKeeper) exited() bool {
	select {
	case <-z.done:
		return true
	default:
		return false
	}
}

// Stop asks the server to stop (SIGTERM) and waits; after 10 s it is killed.
func (z *ZooKeeper) Stop() {
	z.mu.Lock()
	cmd, done := z.cmd, z.done
	z.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	_ = os.Remove(filepath.Join(z.dir, "zookeeper.pid"))
}

// Kill stops the server at once, as a crash would.
func (z *ZooKeeper) Kill() {
	z.mu.Lock()
	cmd, done := z.cmd, z.done
	z.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
	_ = os.Remove(filepath.Join(z.dir, "zookeeper.pid"))
}

// killStale stops a process left running by a Veil that was killed before
// it could stop it, when pidFile names one whose command line has marker.
func killStale(pidFile, marker string, log *zap.Logger) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), marker) {
		return
	}
	log.Warn("stopping a process left over from an earlier run", zap.Int("pid", pid), zap.String("what", marker))
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
