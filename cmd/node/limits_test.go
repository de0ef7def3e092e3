package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

// startRun runs the node with args (on a free loopback port) until the
// test ends and returns its address.
func startRun(t *testing.T, args ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logs := &syncBuffer{want: "msg=started", seen: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"--addr", addr}, args...), noEnv, logs) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v\n%s", err, logs)
			}
		case <-time.After(20 * time.Second):
			t.Error("run did not return after stop")
		}
	})
	select {
	case <-logs.seen:
	case err := <-done:
		t.Fatalf("run ended early: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("no started line:\n%s", logs)
	}
	return addr
}

func TestLimitFlagsReachTheConfig(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HUBFABRIC_CLIENT_TIMEOUT": "61s", "HUBFABRIC_MAX_OUTBOUND_BYTES": "5000"}
	o, err := parseOptions([]string{"--max-message-size", "1000", "--keep-alive-interval", "7s", "--handshake-timeout", "3s"},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.hubConfig(nil)
	want := hub.Config{MaxMessageSize: 1000, MaxOutboundBytes: 5000, KeepAliveInterval: 7 * time.Second, ClientTimeout: 61 * time.Second, HandshakeTimeout: 3 * time.Second}
	if cfg.MaxMessageSize != want.MaxMessageSize || cfg.MaxOutboundBytes != want.MaxOutboundBytes || cfg.KeepAliveInterval != want.KeepAliveInterval ||
		cfg.ClientTimeout != want.ClientTimeout || cfg.HandshakeTimeout != want.HandshakeTimeout {
		t.Fatalf("hub.Config limits = %d %d %s %s %s, want %d %d %s %s %s", cfg.MaxMessageSize, cfg.MaxOutboundBytes, cfg.KeepAliveInterval, cfg.ClientTimeout, cfg.HandshakeTimeout,
			want.MaxMessageSize, want.MaxOutboundBytes, want.KeepAliveInterval, want.ClientTimeout, want.HandshakeTimeout)
	}
	// Not given: the hub's defaults, the same values the flags' help shows.
	o, err = parseOptions(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := o.hubConfig(nil); cfg.MaxMessageSize != hub.DefaultMaxMessageSize || cfg.ClientTimeout != hub.DefaultClientTimeout {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// --max-message-size reaches the connections: a longer message gets the
// Close message naming that limit.
func TestMaxMessageSizeFlag(t *testing.T) {
	t.Parallel()
	addr := startRun(t, "--max-message-size", "1000")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "http://"+addr+"/hubs/chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Invoke(ctx, "Echo", strings.Repeat("x", 900)); err != nil {
		t.Fatalf("a message within the limit: %v", err)
	}
	_, _ = c.Invoke(ctx, "Echo", strings.Repeat("x", 1000))
	<-c.Done()
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) || !strings.Contains(ce.Message, "limit 1000") || ce.AllowReconnect {
		t.Fatalf("client ended with %v, want a Close naming the limit 1000", c.Err())
	}
}

// A request that announces a body and sends none is answered or closed
// within --http-read-timeout (it used to hold its connection and goroutine
// until the client gave up), while a WebSocket lives on past it.
func TestHTTPReadTimeout(t *testing.T) {
	t.Parallel()
	const readTimeout = 300 * time.Millisecond
	addr := startRun(t, "--http-read-timeout", readTimeout.String(), "--http-idle-timeout", "1m")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "http://"+addr+"/hubs/chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "POST /hubs/chat/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	const bound = 10 * time.Second // far above the read timeout; reached only when nothing bounds the read
	_ = conn.SetReadDeadline(time.Now().Add(bound))
	_, err = io.ReadAll(conn) // the answer, if any, then the close
	if elapsed := time.Since(start); err != nil || elapsed >= bound {
		t.Fatalf("bodiless request: connection still open after %s (%v); want it answered and closed within the read timeout %s", elapsed, err, readTimeout)
	} else {
		t.Logf("bodiless request closed after %s", elapsed)
	}

	// The WebSocket opened before outlives the read timeout: a stream of
	// 5 items 200 ms apart, while the client sends nothing, then a call.
	st, err := c.Stream(ctx, "Counter", 5, 200)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ok := st.Next(ctx); ok; _, ok = st.Next(ctx) {
		n++
	}
	if n != 5 || st.Err() != nil {
		t.Fatalf("stream: %d items, %v", n, st.Err())
	}
	if time.Since(start) <= 2*readTimeout {
		t.Fatalf("the test did not outlast the read timeout")
	}
	if _, err := c.Invoke(ctx, "Echo", "still here"); err != nil {
		t.Fatalf("WebSocket after the read timeout: %v", err)
	}
}

// An idle keep-alive connection is closed after --http-idle-timeout (it
// used to be held forever).
func TestHTTPIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	addr := startRun(t, "--http-read-timeout", "1m", "--http-idle-timeout", idle.String())
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("/healthz = %d (close %v), want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	start := time.Now()
	const bound = 10 * time.Second
	_ = conn.SetReadDeadline(time.Now().Add(bound))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection after %s: %v, want it closed by the server after %s", time.Since(start), err, idle)
	}
	t.Logf("idle connection closed after %s", time.Since(start))
}

// The command line, which holds the secrets, is not served by --pprof;
// the profiles are. (In this test the process's command line is the test
// binary's; the 404 is what shows the handler is gone.)
func TestPprofHidesTheCommandLine(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	paddr := ln.Addr().String()
	ln.Close()
	const secret = "s3cret-on-the-command-line"
	startRun(t, "--pprof", paddr, "--jwt-secret", secret, "--token-secret", secret)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + paddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := get("/debug/pprof/cmdline"); status != http.StatusNotFound || strings.Contains(body, secret) {
		t.Fatalf("/debug/pprof/cmdline = %d %q, want 404 without the secret", status, body)
	}
	if status, body := get("/debug/pprof/goroutine?debug=1"); status != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("/debug/pprof/goroutine = %d %.100q, want the profile", status, body)
	}
}

// TestPerConnectionLimitFlagsReachTheConfig: the per-connection bounds
// (pending invocations, streams, groups, group names) come from flags and
// the environment, default to the hub's, and must be positive.
func TestPerConnectionLimitFlagsReachTheConfig(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HUBFABRIC_MAX_GROUP_NAME_BYTES": "64"}
	o, err := parseOptions([]string{"--max-pending-invocations", "8", "--max-pending-invocation-bytes", "4096",
		"--max-streams-per-connection", "3", "--max-groups-per-connection", "20"},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.hubConfig(nil)
	if cfg.MaxPendingInvocations != 8 || cfg.MaxPendingInvocationBytes != 4096 || cfg.MaxStreamsPerConnection != 3 ||
		cfg.MaxGroupsPerConnection != 20 || cfg.MaxGroupNameBytes != 64 {
		t.Fatalf("hub.Config = %+v", cfg)
	}
	o, err = parseOptions(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := o.hubConfig(nil); cfg.MaxPendingInvocations != hub.DefaultMaxPendingInvocations || cfg.MaxStreamsPerConnection != hub.DefaultMaxStreamsPerConnection ||
		cfg.MaxGroupsPerConnection != hub.DefaultMaxGroupsPerConnection || cfg.MaxGroupNameBytes != hub.DefaultMaxGroupNameBytes {
		t.Fatalf("defaults: %+v", cfg)
	}
	for _, f := range []string{"max-pending-invocations", "max-pending-invocation-bytes", "max-streams-per-connection", "max-groups-per-connection", "max-group-name-bytes"} {
		if _, err := parseOptions([]string{"--" + f, "0"}, noEnv, io.Discard); err == nil || !strings.Contains(err.Error(), "--"+f+" must be positive") {
			t.Errorf("--%s 0: %v", f, err)
		}
	}
}
