package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubfabric/hubfabric/internal/redistest"
)

// Bounds of the browser test.
const (
	browserPageLimit  = 3 * time.Minute  // chromium start -> the page's report (each page step is bounded by browserStepMs)
	browserStepMs     = 15000            // one step of the page (connect, one invocation, one stream)
	browserCDPLimit   = 20 * time.Second // one DevTools call
	browserStopLimit  = 15 * time.Second // Browser.close -> chromium exited
	browserWindowW    = 1200
	browserWindowH    = 900
	browserStderrKeep = 64 << 10 // bytes of chromium's stderr kept for a failure message
)

// browserReport is what browser.html POSTs to /report.
type browserReport struct {
	Origin    string `json:"origin"`
	UserAgent string `json:"userAgent"`
	Fatal     string `json:"fatal"`
	Results   []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"results"`
}

// TestBrowser loads browser.html in headless Chromium from two page origins (each a Go httptest
// server on its own port, so an origin other than the nodes'). The page uses the official
// client's browser bundles (signalr.min.js, signalr-protocol-msgpack.min.js from node_modules)
// against two cmd/node processes on one redis-server, sharing --token-secret, with
// --allowed-origins naming the first page origin only. From the allowed origin, for JSON and
// MessagePack, a connection negotiates on node A and opens its WebSocket on node B (no sticky
// sessions), and Echo, a group round trip across the nodes (JoinGroup, SendToGroup) and a server
// stream (Counter) work; negotiate is a credentialed CORS request (the client's withCredentials
// default). From the other origin, negotiate (CORS) and a WebSocket without negotiate (the
// server's Origin check) must both fail. Each page shows its checks as text; the test saves a
// screenshot of it after the checks (DevTools Page.captureScreenshot) in its temp dir and copies
// it to $TMPDIR/browser-shot{,-refused}.png.
func TestBrowser(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	requireNodeJS(t, root) // checks that node_modules holds the pinned client packages
	chromium := requireChromium(t)
	bin := buildNode(t, root)

	allowed := newPageServer(t, root)
	refused := newPageServer(t, root)
	allowedOrigin := "http://" + allowed.Listener.Addr().String()
	refusedOrigin := "http://" + refused.Listener.Addr().String()

	rs := redistest.StartStandalone(t)
	conn := rs.Addr + ",channelPrefix=" + appPrefix
	args := []string{"--redis", conn, "--token-secret", tokenSecret, "--allowed-origins", allowed.Listener.Addr().String()}
	a := &nodeOnRedis{name: "nodeA", id: "browser-node-a", args: args}
	b := &nodeOnRedis{name: "nodeB", id: "browser-node-b", args: args}
	setup := time.Now()
	startNodesOnRedis(t, bin, []*nodeOnRedis{a, b})
	t.Logf("two nodes on Redis ready in %v", time.Since(setup).Round(time.Millisecond))

	// The server side of CORS, without a browser: the preflight of negotiate is answered for the
	// allowed origin (with credentials) and refused for the other; so is the WebSocket upgrade.
	checkPreflight(t, a.addr, allowedOrigin, http.StatusNoContent)
	checkPreflight(t, a.addr, refusedOrigin, http.StatusForbidden)
	checkUpgradeRefused(t, b.addr, refusedOrigin)

	tok := sign(t, jwtSecret, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	config := func(mode string) map[string]any {
		return map[string]any{
			"mode": mode, "hub": hub1, "token": tok, "user": "alice", "run": run, "stepMs": browserStepMs,
			"nodeA": "http://" + a.addr, "nodeB": "http://" + b.addr,
			"wsA": "ws://" + a.addr, "wsB": "ws://" + b.addr,
			"nodeAId": a.id, "nodeBId": b.id,
		}
	}
	allowed.start(config("allowed"))
	refused.start(config("refused"))

	var want []string
	for _, p := range []string{"json", "messagepack"} {
		want = append(want,
			p+": connect, negotiate on node A, WebSocket on node B",
			p+": connect on node A",
			p+": Echo",
			p+": group round trip across nodes (JoinGroup, SendToGroup)",
			p+": server stream (Counter)",
		)
	}
	runPage(t, chromium, allowed, allowedOrigin, "browser-shot.png", want)

	want = nil
	for _, p := range []string{"json", "messagepack"} {
		want = append(want,
			p+": connect (negotiate on node A) from a disallowed origin",
			p+": WebSocket without negotiate on node B from a disallowed origin",
		)
	}
	runPage(t, chromium, refused, refusedOrigin, "browser-shot-refused.png", want)
}

// runPage opens page in a fresh headless Chromium, waits for its report, checks that it carries
// exactly the checks in want, all passed, logs them, and saves a screenshot of the page (in the
// test's temp dir, copied to $TMPDIR/shotName).
func runPage(t *testing.T, chromium string, page *pageServer, origin, shotName string, want []string) {
	t.Helper()
	started := time.Now()
	br := startBrowser(t, chromium, page.URL+"/")
	defer br.close(t)

	var rep browserReport
	var reported time.Time
	timer := time.NewTimer(browserPageLimit)
	defer timer.Stop()
	select {
	case rep = <-page.reports:
		reported = time.Now()
	case err := <-br.exited:
		br.exited <- err
		t.Fatalf("chromium exited before the page %s reported: %v\nchromium stderr:\n%s", page.URL, err, br.stderr.String())
	case <-timer.C:
		shot := filepath.Join(t.TempDir(), shotName)
		text := br.screenshot(t, page.URL, shot)
		t.Fatalf("the page %s did not report within %v; it shows (screenshot %s):\n%s\nchromium stderr:\n%s", page.URL, browserPageLimit, shot, text, br.stderr.String())
	}

	shot := filepath.Join(t.TempDir(), shotName)
	br.screenshot(t, page.URL, shot)
	if err := copyFile(shot, filepath.Join(os.TempDir(), shotName)); err != nil {
		t.Errorf("copy the screenshot: %v", err)
	}
	t.Logf("screenshot of %s after the checks: %s (copied to %s)", origin, shot, filepath.Join(os.TempDir(), shotName))

	t.Logf("page %s (%s) reported %d checks %v after chromium started", rep.Origin, rep.UserAgent, len(rep.Results), reported.Sub(started).Round(time.Millisecond))
	if rep.Origin != origin {
		t.Errorf("the report came from origin %q, want %q", rep.Origin, origin)
	}
	if rep.Fatal != "" {
		t.Errorf("the page failed: %s", rep.Fatal)
	}
	got := map[string]bool{}
	for _, r := range rep.Results {
		verdict := "PASS"
		if !r.OK {
			verdict = "FAIL"
			t.Errorf("browser check failed: %s: %s", r.Name, r.Detail)
		}
		t.Logf("browser: %s %s: %s", verdict, r.Name, r.Detail)
		if got[r.Name] {
			t.Errorf("browser check %q reported twice", r.Name)
		}
		got[r.Name] = true
	}
	for _, name := range want {
		if !got[name] {
			t.Errorf("the page did not report the check %q", name)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the page reported %d distinct checks, want %d", len(got), len(want))
	}
}

// requireChromium finds Debian's chromium; a missing one is a loud failure.
func requireChromium(t *testing.T) string {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed; the browser test needs it: apt-get install chromium (scripts/test.sh does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := exec.CommandContext(ctx, chromium, "--version").Output()
	if err != nil {
		t.Fatalf("chromium --version: %v", err)
	}
	t.Logf("%s", bytes.TrimSpace(v))
	return chromium
}

// checkPreflight sends negotiate's CORS preflight to the node at addr with origin and checks the
// status and, when it is allowed, the credentialed CORS headers.
func checkPreflight(t *testing.T, addr, origin string, want int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodOptions, "http://"+addr+"/hubs/"+hub1+"/negotiate?negotiateVersion=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization,x-requested-with,x-signalr-user-agent")
	res := doRequest(t, req)
	if res.StatusCode != want {
		t.Errorf("negotiate preflight from %s: status %d, want %d", origin, res.StatusCode, want)
	}
	acao, acac := res.Header.Get("Access-Control-Allow-Origin"), res.Header.Get("Access-Control-Allow-Credentials")
	if want == http.StatusNoContent && (acao != origin || acac != "true") {
		t.Errorf("negotiate preflight from %s: Access-Control-Allow-Origin %q, -Credentials %q; want %q, \"true\"", origin, acao, acac, origin)
	}
	if want != http.StatusNoContent && acao != "" {
		t.Errorf("refused negotiate preflight from %s carries Access-Control-Allow-Origin %q", origin, acao)
	}
}

// checkUpgradeRefused asks the node at addr for a WebSocket upgrade with origin and checks that it
// is refused with 403.
func checkUpgradeRefused(t *testing.T, addr, origin string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/hubs/"+hub1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"Origin": origin, "Connection": "Upgrade", "Upgrade": "websocket",
		"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
	} {
		req.Header.Set(k, v)
	}
	if res := doRequest(t, req); res.StatusCode != http.StatusForbidden {
		t.Errorf("WebSocket upgrade from %s: status %d, want 403", origin, res.StatusCode)
	}
}

func doRequest(t *testing.T, req *http.Request) *http.Response {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16))
	res.Body.Close()
	return res
}

// pageServer serves browser.html, its configuration and the client bundles on its own loopback
// port (an origin of its own) and hands each POST /report to reports.
type pageServer struct {
	*httptest.Server
	root    string
	reports chan browserReport
}

// newPageServer makes a page server listening on a loopback port, not yet serving (start), and
// closes it in t.Cleanup.
func newPageServer(t *testing.T, root string) *pageServer {
	t.Helper()
	p := &pageServer{Server: httptest.NewUnstartedServer(nil), root: root, reports: make(chan browserReport, 1)}
	t.Cleanup(p.Close)
	return p
}

// start serves the page with config as window.HF_CONFIG.
func (p *pageServer) start(config map[string]any) {
	cfg, err := json.Marshal(config)
	if err != nil {
		panic(err)
	}
	files := map[string]string{
		"/":                                filepath.Join(p.root, "interop", "browser.html"),
		"/signalr.min.js":                  filepath.Join(p.root, "node_modules", "@microsoft", "signalr", "dist", "browser", "signalr.min.js"),
		"/signalr-protocol-msgpack.min.js": filepath.Join(p.root, "node_modules", "@microsoft", "signalr-protocol-msgpack", "dist", "browser", "signalr-protocol-msgpack.min.js"),
	}
	mux := http.NewServeMux()
	for path, file := range files {
		pattern := "GET " + path
		if path == "/" {
			pattern += "{$}"
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			http.ServeFile(w, r, file)
		})
	}
	mux.HandleFunc("GET /config.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintf(w, "window.HF_CONFIG = %s;\n", cfg)
	})
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var rep browserReport
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case p.reports <- rep:
		default: // a second report: the first one is the test's
		}
		w.WriteHeader(http.StatusNoContent)
	})
	p.Config.Handler = mux
	p.Start()
}

// browser is one headless Chromium process (in a process group of its own) driven over the
// DevTools protocol on a pipe (--remote-debugging-pipe: fd 3 in, fd 4 out, NUL-separated JSON).
// It is used by one goroutine.
type browser struct {
	cmd    *exec.Cmd
	exited chan error // cmd.Wait's result, put back by whoever takes it
	in     *os.File   // to chromium's fd 3
	out    *os.File   // from chromium's fd 4
	outBuf *bufio.Reader
	stderr *tailBuffer
	nextID int
	closed bool
}

// startBrowser starts chromium on url with a temporary profile; the caller closes it.
func startBrowser(t *testing.T, chromium, url string) *browser {
	t.Helper()
	dir := t.TempDir()
	toChrome, in, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out, fromChrome, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
		"--user-data-dir=" + filepath.Join(dir, "profile"),
		fmt.Sprintf("--window-size=%d,%d", browserWindowW, browserWindowH),
		"--hide-scrollbars", "--mute-audio", "--no-first-run", "--no-default-browser-check",
		"--password-store=basic", "--use-mock-keychain",
		// nothing but the test's loopback servers: no background traffic, no name resolution
		"--disable-background-networking", "--disable-component-update", "--disable-default-apps",
		"--disable-extensions", "--disable-sync", "--disable-breakpad", "--no-pings",
		"--disable-domain-reliability", "--disable-client-side-phishing-detection",
		"--metrics-recording-only", "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		url,
	}
	br := &browser{in: in, out: out, outBuf: bufio.NewReader(out), stderr: &tailBuffer{max: browserStderrKeep}, exited: make(chan error, 1)}
	br.cmd = exec.Command(chromium, args...)
	br.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	br.cmd.ExtraFiles = []*os.File{toChrome, fromChrome}
	br.cmd.Stdout = br.stderr
	br.cmd.Stderr = br.stderr
	br.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	br.cmd.WaitDelay = browserStopLimit
	err = br.cmd.Start()
	toChrome.Close()
	fromChrome.Close()
	if err != nil {
		in.Close()
		out.Close()
		t.Fatalf("start chromium: %v", err)
	}
	go func() { br.exited <- br.cmd.Wait() }()
	return br
}

// call sends one DevTools command (to the browser, or to a page's session) and decodes its result
// into result; events read meanwhile are dropped.
func (br *browser) call(sessionID, method string, params, result any) error {
	br.nextID++
	id := br.nextID
	msg := map[string]any{"id": id, "method": method, "params": params}
	if sessionID != "" {
		msg["sessionId"] = sessionID
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(browserCDPLimit)
	_ = br.in.SetWriteDeadline(deadline)
	if _, err := br.in.Write(append(data, 0)); err != nil {
		return fmt.Errorf("%s: write: %w", method, err)
	}
	_ = br.out.SetReadDeadline(deadline)
	for {
		frame, err := br.outBuf.ReadBytes(0)
		if err != nil {
			return fmt.Errorf("%s: read: %w", method, err)
		}
		var m struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(frame[:len(frame)-1], &m); err != nil {
			return fmt.Errorf("%s: bad DevTools message %q: %w", method, frame, err)
		}
		if m.ID != id {
			continue // an event, or the answer to a call that gave up
		}
		if m.Error != nil {
			return fmt.Errorf("%s: DevTools error %d: %s", method, m.Error.Code, m.Error.Message)
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(m.Result, result)
	}
}

// screenshot saves a PNG of the page whose URL starts with url to file, checks that it decodes to
// the viewport's size, and returns the page's text.
func (br *browser) screenshot(t *testing.T, url, file string) string {
	t.Helper()
	var targets struct {
		TargetInfos []struct {
			TargetID string `json:"targetId"`
			Type     string `json:"type"`
			URL      string `json:"url"`
		} `json:"targetInfos"`
	}
	if err := br.call("", "Target.getTargets", map[string]any{}, &targets); err != nil {
		t.Fatal(err)
	}
	target := ""
	for _, ti := range targets.TargetInfos {
		if ti.Type == "page" && strings.HasPrefix(ti.URL, url) {
			target = ti.TargetID
		}
	}
	if target == "" {
		t.Fatalf("no page target at %s among %+v", url, targets.TargetInfos)
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := br.call("", "Target.attachToTarget", map[string]any{"targetId": target, "flatten": true}, &attached); err != nil {
		t.Fatal(err)
	}
	var shot struct {
		Data string `json:"data"`
	}
	if err := br.call(attached.SessionID, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		t.Fatal(err)
	}
	img, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if cfg.Width != browserWindowW || cfg.Height < browserWindowH/2 || cfg.Height > browserWindowH {
		t.Errorf("the screenshot is %dx%d, want the viewport of a %dx%d window", cfg.Width, cfg.Height, browserWindowW, browserWindowH)
	}
	if err := os.WriteFile(file, img, 0o644); err != nil {
		t.Fatal(err)
	}
	var text struct {
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
	}
	if err := br.call(attached.SessionID, "Runtime.evaluate", map[string]any{"expression": "document.body ? document.body.innerText : ''", "returnByValue": true}, &text); err != nil {
		t.Errorf("read the page's text: %v", err)
	}
	return text.Result.Value
}

// close asks chromium to quit (Browser.close), kills its process group if it has not exited
// within browserStopLimit, and checks that no process of the group is left. Idempotent.
func (br *browser) close(t *testing.T) {
	t.Helper()
	if br.closed {
		return
	}
	br.closed = true
	pgid := br.cmd.Process.Pid
	if err := br.call("", "Browser.close", map[string]any{}, nil); err != nil {
		t.Logf("Browser.close: %v", err)
	}
	timer := time.NewTimer(browserStopLimit)
	defer timer.Stop()
	select {
	case err := <-br.exited:
		if err != nil {
			t.Logf("chromium exited: %v", err)
		}
	case <-timer.C:
		t.Errorf("chromium did not exit within %v of Browser.close; killing its process group", browserStopLimit)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-br.exited
	}
	br.in.Close()
	br.out.Close()
	// Children that outlived the browser process (none, normally) are killed too; only while the
	// group has members, so that the group id is still chromium's and not reused.
	for deadline := time.Now().Add(browserStopLimit); ; {
		left := processesInGroup(pgid)
		if len(left) == 0 {
			return
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if time.Now().After(deadline) {
			t.Errorf("chromium processes left %v after it closed: %v", browserStopLimit, left)
			return
		}
		time.Sleep(50 * time.Millisecond) // polling external processes: there is no event for their end
	}
}

// processesInGroup lists the live (non-zombie) processes of process group pgid, as "pid comm".
func processesInGroup(pgid int) []string {
	entries, _ := os.ReadDir("/proc")
	var left []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // it ended meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			left = append(left, e.Name()+" "+s[strings.IndexByte(s, '(')+1:i])
		}
	}
	return left
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// tailBuffer keeps the last max bytes written to it; safe for concurrent writers.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
