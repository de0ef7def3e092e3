package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(removeBuildAfter{m})
}

// removeBuildAfter runs the tests, then removes the node binary they shared.
type removeBuildAfter struct{ *testing.M }

func (r removeBuildAfter) Run() int {
	code := r.M.Run()
	if nodeBuild.dir != "" {
		_ = os.RemoveAll(nodeBuild.dir)
	}
	return code
}

const (
	jwtSecret   = "interop-secret-Zs9q"
	nodeID      = "interop-node"
	hub1        = "chat"
	hub2        = "lobby"
	buildLimit  = 5 * time.Minute
	readyLimit  = 60 * time.Second
	suiteLimit  = 10 * time.Minute
	stopLimit   = 20 * time.Second
	minNodeMajr = 20
	// groupAckTimeout is every node's --group-ack-timeout: the non-existent-connection scenarios
	// wait for it.
	groupAckTimeout = time.Second
)

var summaryRE = regexp.MustCompile(`^(\d+) passed, (\d+) failed$`)

// TestInterop builds cmd/node, starts it on a loopback port with JWT auth and two hubs, and runs
// interop/scenarios.mjs (the official @microsoft/signalr client, JSON and MessagePack) against it.
func TestInterop(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nodeJS := requireNodeJS(t, root)

	bin := buildNode(t, root)
	addr := freeLoopbackAddr(t)
	startNode(t, bin, addr, "node", nodeArgs(addr, nodeID), false)

	env := append(os.Environ(),
		"HUBFABRIC_URL=http://"+addr,
		"HUBFABRIC_HUB="+hub1,
		"HUBFABRIC_HUB2="+hub2,
		"HUBFABRIC_NODE_ID="+nodeID,
	)
	runScenarios(t, nodeJS, root, append(env, tokenEnv(t)...))
}

// TestInteropMessageSizeLimit runs a node with a non-default --max-message-size and checks, with
// the official client, that a message over it closes the connection with the server's Close
// message naming the limit at three sizes: just over it, about 4.5x (past the old WebSocket read
// limit of 4x + 4 KiB, which sent a bare close 1009 instead) and 100x.
func TestInteropMessageSizeLimit(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nodeJS := requireNodeJS(t, root)
	bin := buildNode(t, root)
	addr := freeLoopbackAddr(t)
	const limit = 10000
	startNode(t, bin, addr, "node", nodeArgs(addr, nodeID, "--max-message-size", strconv.Itoa(limit)), false)
	env := append(os.Environ(),
		"HUBFABRIC_URL=http://"+addr,
		"HUBFABRIC_HUB="+hub1,
		"INTEROP_MAX_MESSAGE_SIZE="+strconv.Itoa(limit),
		"INTEROP_ONLY=max-message-size",
	)
	runScenarios(t, nodeJS, root, append(env, tokenEnv(t)...))
}

// tokenEnv gives scenarios.mjs its tokens (valid ones and ones the node must refuse).
func tokenEnv(t *testing.T) []string {
	t.Helper()
	return []string{
		"TOKEN_ALICE=" + sign(t, jwtSecret, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}),
		"TOKEN_ALICE2=" + sign(t, jwtSecret, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(2 * time.Hour).Unix(), "jti": "second"}),
		"TOKEN_BOB=" + sign(t, jwtSecret, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(time.Hour).Unix()}),
		"TOKEN_EXPIRED=" + sign(t, jwtSecret, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "iat": time.Now().Add(-2 * time.Hour).Unix(), "exp": time.Now().Add(-time.Hour).Unix()}),
		"TOKEN_BADSIG=" + sign(t, jwtSecret+"-not-it", jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}),
		"TOKEN_NONE_ALG=" + sign(t, jwt.UnsafeAllowNoneSignatureType, jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}),
	}
}

// runScenarios runs interop/scenarios.mjs with env, streams its lines to t.Log and fails t unless
// it printed a summary with at least one scenario passed and none failed.
func runScenarios(t *testing.T, nodeJS, root string, env []string) {
	t.Helper()
	runScript(t, nodeJS, root, "scenarios.mjs", env)
}

// runScript runs interop/<script> (printing scenario lines and a summary as scenarios.mjs does)
// with env and fails t unless it passed at least one scenario and failed none.
func runScript(t *testing.T, nodeJS, root, script string, env []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), suiteLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeJS, filepath.Join("interop", script))
	cmd.Dir = root
	cmd.Env = env
	cmd.WaitDelay = 10 * time.Second
	var fails []string
	summary := ""
	out := &lineWriter{line: func(s string) {
		t.Log("js: " + s)
		if strings.HasPrefix(s, "FAIL ") {
			fails = append(fails, s)
		}
		if summaryRE.MatchString(s) {
			summary = s
		}
	}}
	cmd.Stdout = out
	cmd.Stderr = out
	runErr := cmd.Run()
	out.flush()

	switch {
	case ctx.Err() != nil:
		t.Fatalf("interop suite did not finish within %v (killed); last summary %q", suiteLimit, summary)
	case summary == "":
		t.Fatalf("interop suite printed no summary line (exit: %v)", runErr)
	case runErr != nil || len(fails) > 0:
		t.Fatalf("interop suite: %s (exit: %v)\n%s", summary, runErr, strings.Join(fails, "\n"))
	}
	m := summaryRE.FindStringSubmatch(summary)
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Fatalf("interop suite ran no scenario: %s", summary)
	}
	t.Logf("interop suite: %s", summary)
}

// requireNodeJS finds node (20+) and the pinned npm packages; anything missing is a loud failure.
func requireNodeJS(t *testing.T, root string) string {
	t.Helper()
	nodeJS, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js %d+) is not installed; the interop suite needs it: apt-get install nodejs npm, then `npm ci` at the repository root (%s)", minNodeMajr, root)
	}
	v, err := exec.Command(nodeJS, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	major, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(strings.TrimSpace(string(v)), "v"), ".", 2)[0])
	if err != nil || major < minNodeMajr {
		t.Fatalf("node %s is too old: the interop suite needs Node.js %d+", strings.TrimSpace(string(v)), minNodeMajr)
	}
	var pinned struct{ Dependencies map[string]string }
	readJSON(t, filepath.Join(root, "package.json"), &pinned)
	for _, pkg := range []string{"@microsoft/signalr", "@microsoft/signalr-protocol-msgpack"} {
		var installed struct{ Version string }
		file := filepath.Join(root, "node_modules", pkg, "package.json")
		if _, err := os.Stat(file); err != nil {
			t.Fatalf("npm package %s is not installed: run `npm ci` in %s (it installs the versions pinned in package-lock.json)", pkg, root)
		}
		readJSON(t, file, &installed)
		if want := pinned.Dependencies[pkg]; installed.Version != want {
			t.Fatalf("npm package %s is %s, package.json pins %q: run `npm ci` in %s", pkg, installed.Version, want, root)
		}
	}
	return nodeJS
}

func readJSON(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// nodeBuild is the node binary, built once per test binary run and shared by the tests;
// TestMain removes its directory.
var nodeBuild struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// buildNode builds ./cmd/node (with -race when the tests run with it) once and returns the binary.
func buildNode(t *testing.T, root string) string {
	t.Helper()
	nodeBuild.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			nodeBuild.err = fmt.Errorf("the go tool is not on PATH: %v", err)
			return
		}
		dir, err := os.MkdirTemp("", "hubfabric-interop-")
		if err != nil {
			nodeBuild.err = err
			return
		}
		nodeBuild.dir = dir
		bin := filepath.Join(dir, "hubfabric-node")
		args := []string{"build", "-o", bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/node")
		ctx, cancel := context.WithTimeout(context.Background(), buildLimit)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool, args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			nodeBuild.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		nodeBuild.bin = bin
	})
	if nodeBuild.err != nil {
		t.Fatal(nodeBuild.err)
	}
	return nodeBuild.bin
}

// nodeArgs are the flags every node of the suite runs with (JWT auth, both hubs, a short group
// ack timeout), plus extra.
func nodeArgs(addr, id string, extra ...string) []string {
	return append([]string{
		"--addr", addr,
		"--hub", hub1 + "," + hub2,
		"--jwt-secret", jwtSecret,
		"--node-id", id,
		"--group-ack-timeout", groupAckTimeout.String(),
	}, extra...)
}

// freeLoopbackAddr picks a port that was free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// startNode runs the node binary with args (which must listen on addr), streams its log to t.Log
// as "name: ...", waits until it serves (and, with readyz, until GET /readyz is 200: its backplane
// is up), and stops it (SIGTERM, then SIGKILL after stopLimit) in t.Cleanup.
func startNode(t *testing.T, bin, addr, name string, args []string, readyz bool) {
	t.Helper()
	listening := make(chan struct{})
	var once sync.Once
	raced := false // read after the process exited (its output is fully written then)
	logw := &lineWriter{line: func(s string) {
		t.Log(name + ": " + s)
		if strings.Contains(s, "WARNING: DATA RACE") {
			raced = true
		}
		if strings.Contains(s, "msg=started") || strings.Contains(s, `"msg":"started"`) {
			once.Do(func() { close(listening) })
		}
	}}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logw
	cmd.Stderr = logw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-exited:
			logw.flush()
			t.Errorf("%s exited before the end of the test: %v", name, err)
			if raced {
				t.Errorf("%s (built with -race) reported a data race: see the %s: lines above", name, name)
			}
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(stopLimit)
		defer timer.Stop()
		select {
		case err := <-exited:
			if err != nil {
				t.Logf("%s exited after SIGTERM: %v", name, err)
			}
		case <-timer.C:
			t.Errorf("%s did not exit within %v of SIGTERM; killing it", name, stopLimit)
			_ = cmd.Process.Kill()
			<-exited
		}
		logw.flush()
		if raced {
			t.Errorf("%s (built with -race) reported a data race: see the %s: lines above", name, name)
		}
	})

	healthz := "http://" + addr + "/healthz"
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.NewTimer(readyLimit)
	defer deadline.Stop()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for ready := false; !ready; {
		select {
		case <-listening:
			ready = true
		case <-poll.C: // in case the log line changes: /readyz is the contract (healthz is 200 before the node started)
			ready = healthOK(client, "http://"+addr+"/readyz") == nil
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("%s exited before serving: %v", name, err)
		case <-deadline.C:
			t.Fatalf("%s did not serve within %v (no msg=started log line, %s not 200: %v)", name, readyLimit, healthz, healthOK(client, healthz))
		}
	}
	if err := healthOK(client, healthz); err != nil {
		t.Fatalf("GET %s: %v", healthz, err)
	}
	if readyz {
		url := "http://" + addr + "/readyz"
		for err := healthOK(client, url); err != nil; err = healthOK(client, url) {
			select {
			case <-poll.C:
			case err := <-exited:
				exited <- err
				t.Fatalf("%s exited before it was ready: %v", name, err)
			case <-deadline.C:
				t.Fatalf("%s not ready within %v: GET %s: %v", name, readyLimit, url, err)
			}
		}
	}
	client.CloseIdleConnections()
}

func healthOK(c *http.Client, url string) error {
	res, err := c.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", res.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

func sign(t *testing.T, key any, method jwt.SigningMethod, claims jwt.MapClaims) string {
	t.Helper()
	if _, ok := claims["iat"]; !ok {
		claims["iat"] = time.Now().Unix()
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(keyBytes(key))
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return s
}

func keyBytes(key any) any {
	if s, ok := key.(string); ok {
		return []byte(s)
	}
	return key
}

// lineWriter hands every complete line written to it to line; safe for concurrent writers.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	line func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		s := strings.TrimRight(string(w.buf.Next(i+1)), "\r\n")
		w.line(s)
	}
}

// flush hands over a last line that had no newline.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() > 0 {
		sc := bufio.NewScanner(&w.buf)
		for sc.Scan() {
			w.line(sc.Text())
		}
		w.buf.Reset()
	}
}
