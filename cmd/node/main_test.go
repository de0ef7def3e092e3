package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

// runMainEnv makes the test binary run main instead of the tests, for
// tests of the exit status.
const runMainEnv = "HUBFABRIC_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Args = append([]string{"node"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m, protoactorThrottle)
}

func TestBadFlagsAreClearErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined: -nope"},
		{"bad hub name", []string{"--hub", "a/b"}, nil, `--hub "a/b"`},
		{"duplicate hub", []string{"--hub", "chat,chat"}, nil, `--hub "chat" given twice`},
		{"bad duration", []string{"--group-ack-timeout", "soon"}, nil, "invalid value \"soon\""},
		{"negative duration", []string{"--group-ack-timeout", "-1s"}, nil, "must be positive"},
		{"bad log format", []string{"--log-format", "xml"}, nil, "use text or json"},
		{"bad log level", []string{"--log-level", "loud"}, nil, "use debug, info, warn or error"},
		{"bad addr", []string{"--addr", "8080"}, nil, `--addr "8080"`},
		{"bad pprof addr", []string{"--pprof", "6060"}, nil, `--pprof "6060"`},
		{"extra argument", []string{"serve"}, nil, `unexpected argument "serve"`},
		{"bad env", nil, map[string]string{"HUBFABRIC_GROUP_ACK_TIMEOUT": "x"}, "invalid HUBFABRIC_GROUP_ACK_TIMEOUT"},
		{"bad redis option", []string{"--redis", "localhost:6379,bogus=1"}, nil, `--redis: `},
		{"bad redis timeout", []string{"--redis", "localhost:6379,connectTimeout=abc"}, nil, `connectTimeout`},
		{"empty redis endpoint", []string{"--redis", ","}, nil, `--redis: `},
		{"channel prefix without redis", []string{"--channel-prefix", "app:"}, nil, `--channel-prefix needs --redis`},
		{"empty jwt secret", []string{"--jwt-secret", ""}, nil, "--jwt-secret is empty"},
		{"empty jwt secret with =", []string{"--jwt-secret="}, nil, "--jwt-secret is empty"},
		{"empty token secret", []string{"--token-secret", ""}, nil, "--token-secret is empty"},
		{"empty jwt secret in env", nil, map[string]string{"HUBFABRIC_JWT_SECRET": ""}, "HUBFABRIC_JWT_SECRET is set but empty"},
		{"empty token secret in env", nil, map[string]string{"HUBFABRIC_TOKEN_SECRET": ""}, "HUBFABRIC_TOKEN_SECRET is set but empty"},
		{"bad origin pattern", []string{"--allowed-origins", "["}, nil, `--allowed-origins: `},
		{"port out of range", []string{"--addr", "127.0.0.1:99999"}, nil, `--addr "127.0.0.1:99999"`},
		{"pprof port out of range", []string{"--pprof", "127.0.0.1:70000"}, nil, `--pprof "127.0.0.1:70000"`},
		{"unknown port name", []string{"--addr", ":nosuchservice"}, nil, `--addr ":nosuchservice"`},
		{"zero max message size", []string{"--max-message-size", "0"}, nil, "--max-message-size must be positive"},
		{"bad max message size", []string{"--max-message-size", "32k"}, nil, `invalid value "32k"`},
		{"negative max outbound bytes", []string{"--max-outbound-bytes", "-1"}, nil, "--max-outbound-bytes must be positive"},
		{"zero keep-alive", []string{"--keep-alive-interval", "0s"}, nil, "--keep-alive-interval must be positive"},
		{"negative client timeout", []string{"--client-timeout", "-1s"}, nil, "--client-timeout must be positive"},
		{"zero handshake timeout", []string{"--handshake-timeout", "0"}, nil, "--handshake-timeout must be positive"},
		{"zero http read timeout", []string{"--http-read-timeout", "0"}, nil, "--http-read-timeout must be positive"},
		{"zero http idle timeout", []string{"--http-idle-timeout", "0"}, nil, "--http-idle-timeout must be positive"},
		{"zero max header bytes", []string{"--http-max-header-bytes", "0"}, nil, "--http-max-header-bytes must be positive"},
		{"zero poll timeout", []string{"--poll-timeout", "0s"}, nil, "--poll-timeout must be positive"},
		{"bad long-polling switch in env", nil, map[string]string{"HUBFABRIC_LONG_POLLING": "maybe"}, "invalid HUBFABRIC_LONG_POLLING"},
		{"bad limit in env", nil, map[string]string{"HUBFABRIC_MAX_MESSAGE_SIZE": "big"}, "invalid HUBFABRIC_MAX_MESSAGE_SIZE"},
		{"channel prefix reaching into another app", []string{"--redis", "localhost:6379", "--channel-prefix", "hubfabric:h:chat:g:x"}, nil,
			`--channel-prefix: channel prefix "hubfabric:h:chat:g:x": use letters, digits, '.', '_', '-' and end it with one ':'`},
		{"channel prefix without its colon", []string{"--redis", "localhost:6379", "--channel-prefix", "app"}, nil, `--channel-prefix: channel prefix "app"`},
		{"bad channel prefix in the string", []string{"--redis", "localhost:6379,channelPrefix=a:b:"}, nil, `--redis: redisbp: connection string: channelPrefix: channel prefix "a:b:"`},
		{"bare word in redis", []string{"--redis", "localhost:6379,secret"}, nil, `--redis: redisbp: connection string: "secret": not host:port or key=value`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			lookupEnv := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			err := run(context.Background(), tc.args, lookupEnv, &stderr)
			var u usageError
			if !errors.As(err, &u) {
				t.Fatalf("run(%v) = %v, want a usage error", tc.args, err)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not say %q", stderr.String(), tc.want)
			}
		})
	}
}

// A configuration error is exit status 2, as the README says, whichever
// check finds it: these three once exited 1 (the origin pattern and the
// port were found only when used; an empty secret was not found at all:
// the node ran without authentication).
func TestConfigurationErrorsExitTwo(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--allowed-origins", "["},
		{"--addr", "127.0.0.1:99999"},
		{"--jwt-secret", ""},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], args...)
		cmd.Env = []string{runMainEnv + "=1"}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("node %q: %v, want exit status 2\n%s", args, err, out)
		}
		if !strings.Contains(string(out), args[0]) {
			t.Errorf("node %q said %q, want a message naming %s", args, out, args[0])
		}
	}
}

func TestEnvironmentAndFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HUBFABRIC_HUB": "a,b", "HUBFABRIC_GROUP_ACK_TIMEOUT": "3s", "HUBFABRIC_ADDR": ":9000"}
	o, err := parseOptions([]string{"--addr", ":9001", "--hub", "c", "--hub", "d"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.addr != ":9001" || strings.Join(o.hubs, ",") != "c,d" || o.groupAckTimeout != 3*time.Second {
		t.Fatalf("options = %+v; flags must win over the environment, which fills the rest", o)
	}
}

// syncBuffer is a goroutine-safe log sink that signals when a line
// containing want appears.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	if strings.Contains(s.buf.String(), s.want) {
		s.once.Do(func() { close(s.seen) })
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func TestRunServesAndShutsDownGracefully(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	logs := &syncBuffer{want: "msg=started", seen: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", addr, "--hub", "chat,lobby", "--node-id", "n1"}, noEnv, logs)
	}()
	select {
	case <-logs.seen:
	case err := <-done:
		t.Fatalf("run ended early: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("no started line:\n%s", logs)
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}

	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(cctx, "http://"+addr+"/hubs/lobby", &client.Options{Protocol: "messagepack"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(cctx)
	var who struct {
		ConnectionID string `json:"connectionId"`
		NodeID       string `json:"nodeId"`
	}
	res, err := c.Invoke(cctx, "whoami")
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Bind(&who); err != nil || who.NodeID != "n1" || who.ConnectionID != c.ConnectionID() {
		t.Fatalf("WhoAmI = %+v (%v)", who, err)
	}

	stop() // what SIGTERM does through signal.NotifyContext
	select {
	case <-c.Done():
	case <-cctx.Done():
		t.Fatal("the client was not closed on shutdown")
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) || !ce.AllowReconnect {
		t.Fatalf("client ended with %v, want the server's Close", c.Err())
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after shutdown")
	}
	if !strings.Contains(logs.String(), "msg=stopped") {
		t.Fatalf("no stopped line:\n%s", logs)
	}
}

// protoactorThrottle is protoactor's dead-letter log throttle: a goroutine
// it starts on the first dead letter (a message to an actor that has just
// stopped) and that ends by itself after the throttle interval (1 s).
var protoactorThrottle = goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1")

func TestRedisAbortConnectFailsClearly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String() // nothing answers Redis here once closed
	ln.Close()
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = run(ctx, []string{"--addr", "127.0.0.1:0", "--redis", dead + ",abortConnect=true,connectTimeout=500"}, noEnv, &stderr)
	if err == nil || !strings.Contains(err.Error(), "backplane") {
		t.Fatalf("run with an unreachable Redis and abortConnect=true = %v, want an error naming the backplane", err)
	}
}

// TestReadyzAnswersWhileRedisIsDownAtStartup: with Redis unreachable at
// start-up (abortConnect=false), the node serves at once: /readyz answers
// 503 without waiting for the backplane, during Start and after it.
func TestReadyzAnswersWhileRedisIsDownAtStartup(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String() // nothing answers Redis here once closed
	ln.Close()
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	logs := &syncBuffer{want: "msg=listening", seen: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", addr, "--redis", dead + ",connectTimeout=3000"}, noEnv, logs)
	}()
	select {
	case <-logs.seen:
	case err := <-done:
		t.Fatalf("run ended early: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("no listening line:\n%s", logs)
	}
	hc := &http.Client{Timeout: 2 * time.Second} // a hang fails the test; the latency is logged
	for i := range 3 {
		start := time.Now()
		resp, err := hc.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatalf("/readyz while Redis is down: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("/readyz #%d: %d %q in %s", i, resp.StatusCode, strings.TrimSpace(string(body)), time.Since(start))
		b := string(body)
		if resp.StatusCode != http.StatusServiceUnavailable || !(strings.HasPrefix(b, "not started") || strings.HasPrefix(b, "starting") || strings.HasPrefix(b, "backplane down")) {
			t.Fatalf("/readyz while Redis is down = %d %q, want 503: not started, starting or backplane down", resp.StatusCode, body)
		}
	}
	stop()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after stop")
	}
}

// noEnv is an empty environment.
func noEnv(string) (string, bool) { return "", false }

// TestTransportSwitches: --long-polling, --server-sent-events (or their
// environment variables) and --poll-timeout reach hub.Config; by default
// both transports are on with ASP.NET's 90 s poll timeout.
func TestTransportSwitches(t *testing.T) {
	var stderr bytes.Buffer
	o, err := parseOptions(nil, func(string) (string, bool) { return "", false }, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.hubConfig(nil)
	if cfg.DisableLongPolling || cfg.DisableServerSentEvents || cfg.PollTimeout != hub.DefaultPollTimeout {
		t.Fatalf("defaults: %+v", cfg)
	}
	env := map[string]string{"HUBFABRIC_SERVER_SENT_EVENTS": "false"}
	o, err = parseOptions([]string{"--long-polling=false", "--poll-timeout", "5s"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	cfg = o.hubConfig(nil)
	if !cfg.DisableLongPolling || !cfg.DisableServerSentEvents || cfg.PollTimeout != 5*time.Second {
		t.Fatalf("switched off: DisableLongPolling %v, DisableServerSentEvents %v, PollTimeout %s", cfg.DisableLongPolling, cfg.DisableServerSentEvents, cfg.PollTimeout)
	}
}
