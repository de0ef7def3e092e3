// Package redistest starts real redis-server processes for tests: a
// standalone server or a small Redis Cluster, each on free loopback ports in
// the test's temporary directory, and stopped by t.Cleanup.
//
// A missing redis-server binary fails the test with the install hint; it is
// never a skip, so a test run cannot pass by silently testing nothing.
//
// Waiting for a server to become ready polls it with a bounded loop: the
// server is an external process and announces readiness only by answering.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ReadyTimeout bounds how long a server may take to answer PING after it
// was started, and a cluster to report cluster_state:ok.
const ReadyTimeout = 15 * time.Second

const installHint = "redis-server not found in PATH: install it with `apt-get install -y redis-server`"

// Server is one redis-server process. Its methods are safe for concurrent
// use.
type Server struct {
	// Addr is "127.0.0.1:port"; it stays the same across Restart.
	Addr string

	port  int
	dir   string
	conf  string // if set, a sentinel configuration file: run as a sentinel
	args  []string
	mu    sync.Mutex
	cmd   *exec.Cmd
	waitc chan struct{} // closed when cmd has been waited for
	logf  *os.File
}

// StartStandalone starts redis-server on a free 127.0.0.1 port with
// persistence off (an empty --save and --appendonly no), in t.TempDir(), plus
// extraArgs (for example "--client-output-buffer-limit", "pubsub 64kb 32kb 1").
// It returns once the server answers PING and kills it in t.Cleanup.
func StartStandalone(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	s := newServer(t, extraArgs)
	t.Cleanup(s.Kill)
	return s
}

func newServer(t testing.TB, extraArgs []string) *Server {
	t.Helper()
	serverBinary(t)
	cluster := slices.Contains(extraArgs, "--cluster-enabled")
	s, err := startOnFreePort(t, func(port int) *Server {
		// A cluster node also binds its bus port (port + 10000), which
		// freePort never checked: another test's client connection held
		// one in a CI run ("Failed listening on port 44933 (cluster),
		// aborting").
		if cluster && (port+clusterBusOffset > 65535 || !portFree(port+clusterBusOffset)) {
			return nil
		}
		return &Server{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			port: port,
			dir:  t.TempDir(), // a failed start may have written its nodes.conf
			args: extraArgs,
		}
	})
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return s
}

// startOnFreePort starts the server that build makes for a port freePort
// found, and returns it. A port found free can be taken before
// redis-server binds it: a start that fails on a port in use, or a port
// that build refuses (nil), is retried on a new port, bindAttempts times
// at most.
func startOnFreePort(t testing.TB, build func(port int) *Server) (*Server, error) {
	t.Helper()
	for range bindAttempts {
		s := build(freePort(t))
		if s == nil {
			continue
		}
		err := s.start()
		if err == nil {
			return s, nil
		}
		if !strings.Contains(err.Error(), "Address already in use") {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no usable free port in %d tries (a cluster node needs port and port+%d free)", bindAttempts, clusterBusOffset)
}

// bindAttempts bounds the starts of one server that fail on a port in use.
const bindAttempts = 5

// clusterBusOffset is where a cluster node's bus port is: its port + 10000.
const clusterBusOffset = 10000

// portFree reports whether 127.0.0.1:port can be bound now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func serverBinary(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal(installHint)
	}
}

// freePort asks the kernel for a free TCP port on 127.0.0.1. Another
// process could take it before redis-server binds it; start then fails
// loudly rather than flaking silently.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("server %s already running", s.Addr)
	}
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
	}
	if s.conf != "" {
		args = []string{s.conf, "--sentinel", "--protected-mode", "no"}
	}
	args = append(args, s.args...)
	logf, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("redis-server", args...)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		if errors.Is(err, exec.ErrNotFound) {
			return errors.New(installHint)
		}
		return fmt.Errorf("start redis-server: %w", err)
	}
	waitc := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(waitc)
	}()
	s.cmd, s.waitc, s.logf = cmd, waitc, logf
	if err := waitReady(s.Addr, waitc); err != nil {
		_ = cmd.Process.Kill()
		<-waitc
		s.cmd = nil
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf("redis-server on %s: %w\nlog:\n%s", s.Addr, err, log)
	}
	return nil
}

// waitReady polls addr with PING until it answers PONG, the process exits,
// or ReadyTimeout passes.
func waitReady(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(ReadyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited before answering PING")
		default:
		}
		reply, err := Do(addr, "PING")
		if err == nil && reply == "PONG" {
			return nil
		}
		last = fmt.Errorf("PING: %q, %v", reply, err)
		time.Sleep(20 * time.Millisecond) // polling an external process
	}
	return fmt.Errorf("not ready after %v: %v", ReadyTimeout, last)
}

// Stop stops the server with SIGTERM and waits for it to exit. Stopping a
// stopped server does nothing.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Kill stops the server with SIGKILL and waits for it to exit. Killing a
// stopped server does nothing.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	<-s.waitc
	s.cmd = nil
}

// Restart starts a stopped server again on the same port with the same
// arguments (and, persistence being off, no data). It fails t if the server
// does not come up; Restart of a running server stops it first.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("redistest: restart: %v", err)
	}
}

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	// Addrs are the masters' "127.0.0.1:port" addresses.
	Addrs   []string
	Servers []*Server
}

// StartCluster starts masters redis-server processes (at least 3, as Redis
// Cluster requires) with cluster mode on, joins them with
// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, and
// returns once every node reports cluster_state:ok. The processes are killed
// in t.Cleanup.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: a Redis Cluster needs at least 3 masters, got %d", masters)
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli not found in PATH: install it with `apt-get install -y redis-server`")
	}
	c := &Cluster{}
	for range masters {
		s := StartStandalone(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000")
		c.Servers = append(c.Servers, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(ReadyTimeout)
	for _, addr := range c.Addrs {
		for {
			info, err := Do(addr, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: cluster node %s not ok after %v: %q, %v", addr, ReadyTimeout, info, err)
			}
			time.Sleep(20 * time.Millisecond) // polling external processes
		}
	}
	return c
}

// Do sends one command to addr over a fresh connection and returns the reply
// as text: a simple or bulk string as is, an integer in decimal, an array's
// elements joined by newlines. A Redis error reply is returned as an error.
// It is for test setup and inspection, not for traffic.
func Do(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// StartSentinel starts a standalone master and one Redis Sentinel
// monitoring it under masterName (quorum 1). It returns the sentinel and the
// master; both are killed in t.Cleanup. It returns once the sentinel knows
// the master.
func StartSentinel(t testing.TB, masterName string) (sentinel, master *Server) {
	t.Helper()
	master = StartStandalone(t)
	_, mport, _ := net.SplitHostPort(master.Addr)
	sentinel, err := startOnFreePort(t, func(port int) *Server {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %s 1\n", port, dir, masterName, mport)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		return &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), port: port, dir: dir, conf: conf}
	})
	if err != nil {
		t.Fatalf("redistest: sentinel: %v", err)
	}
	t.Cleanup(sentinel.Kill)
	deadline := time.Now().Add(ReadyTimeout)
	for {
		addr, err := Do(sentinel.Addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName)
		if err == nil && strings.ReplaceAll(addr, "\n", ":") == master.Addr {
			return sentinel, master
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: sentinel does not know master %s after %v: %q, %v", masterName, ReadyTimeout, addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling an external process
	}
}

// Launch starts redis-server as StartStandalone does, in dir, outside a
// test (for cmd/loadgen): the caller stops it with Kill. A missing binary
// is an error with the install hint.
func Launch(dir string, extraArgs ...string) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New(installHint)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), port: port, dir: dir, args: extraArgs}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts a stopped server again on the same port with the same
// arguments, returning once it answers PING (Restart, without a test).
func (s *Server) Start() error { return s.start() }

// Pause stops the running server's process with SIGSTOP: it holds its
// connections but answers nothing until Resume.
func (s *Server) Pause() error { return s.sendSignal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() error { return s.sendSignal(syscall.SIGCONT) }

func (s *Server) sendSignal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return fmt.Errorf("server %s is not running", s.Addr)
	}
	return s.cmd.Process.Signal(sig)
}
