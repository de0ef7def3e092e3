package interop

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

const (
	// tokenSecret is shared by every node on one Redis, so a negotiate answered by one node and a
	// WebSocket opened on another work together.
	tokenSecret = "interop-token-secret-Qw7"
	appPrefix   = "app:"
	otherPrefix = "other:"
)

// nodeOnRedis is one node of a multi-node test.
type nodeOnRedis struct {
	name, id, addr string
	args           []string
}

// startNodesOnRedis starts the given nodes (each on a fresh loopback port, with nodeArgs plus
// its own args) and waits until each is ready (its backplane is up).
func startNodesOnRedis(t *testing.T, bin string, nodes []*nodeOnRedis) {
	t.Helper()
	for _, n := range nodes {
		n.addr = freeLoopbackAddr(t)
		startNode(t, bin, n.addr, n.name, nodeArgs(n.addr, n.id, n.args...), true)
	}
}

// multiNodeEnv is scenarios.mjs's configuration for nodes 1 and 2 (same prefix) and, when
// given, node 3 (another prefix).
func multiNodeEnv(t *testing.T, nodes []*nodeOnRedis) []string {
	t.Helper()
	env := append(os.Environ(),
		"HUBFABRIC_URL=http://"+nodes[0].addr,
		"HUBFABRIC_NODE_ID="+nodes[0].id,
		"HUBFABRIC_URL2=http://"+nodes[1].addr,
		"HUBFABRIC_NODE_ID2="+nodes[1].id,
		"HUBFABRIC_HUB="+hub1,
		"HUBFABRIC_HUB2="+hub2,
		fmt.Sprintf("HUBFABRIC_GROUP_ACK_TIMEOUT_MS=%d", groupAckTimeout.Milliseconds()),
	)
	if len(nodes) > 2 {
		env = append(env, "HUBFABRIC_URL3=http://"+nodes[2].addr)
	}
	return append(env, tokenEnv(t)...)
}

// TestInteropTwoNodesStandalone runs the whole interop suite (single-node scenarios against node
// 1, cross-node scenarios across nodes 1 and 2, channel-prefix isolation against node 3) on three
// cmd/node processes sharing one standalone redis-server: nodes 1 and 2 with channel prefix "app:"
// (from the connection string), node 3 with "other:" (--channel-prefix overriding the string's).
func TestInteropTwoNodesStandalone(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nodeJS := requireNodeJS(t, root)
	bin := buildNode(t, root)
	rs := redistest.StartStandalone(t)
	conn := rs.Addr + ",channelPrefix=" + appPrefix
	nodes := []*nodeOnRedis{
		{name: "node1", id: "interop-node-1", args: []string{"--redis", conn, "--token-secret", tokenSecret}},
		{name: "node2", id: "interop-node-2", args: []string{"--redis", conn, "--token-secret", tokenSecret}},
		{name: "node3", id: "interop-node-3", args: []string{"--redis", conn, "--channel-prefix", otherPrefix, "--token-secret", tokenSecret}},
	}
	startNodesOnRedis(t, bin, nodes)
	runScenarios(t, nodeJS, root, multiNodeEnv(t, nodes))
}

// TestInteropTwoNodesCluster runs the same suite on a 3-master Redis Cluster (sharded pub/sub):
// the connection string lists the three masters.
func TestInteropTwoNodesCluster(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nodeJS := requireNodeJS(t, root)
	bin := buildNode(t, root)
	rc := redistest.StartCluster(t, 3)
	conn := strings.Join(rc.Addrs, ",") + ",channelPrefix=" + appPrefix
	nodes := []*nodeOnRedis{
		{name: "node1", id: "interop-cnode-1", args: []string{"--redis", conn, "--token-secret", tokenSecret}},
		{name: "node2", id: "interop-cnode-2", args: []string{"--redis", conn, "--token-secret", tokenSecret}},
		{name: "node3", id: "interop-cnode-3", args: []string{"--redis", conn, "--channel-prefix", otherPrefix, "--token-secret", tokenSecret}},
	}
	startNodesOnRedis(t, bin, nodes)
	env := multiNodeEnv(t, nodes)
	runScenarios(t, nodeJS, root, env)
}

// Bounds of the outage test.
const (
	outageFailLimit    = 15 * time.Second // Redis stopped -> a send fails
	outageRecoverLimit = 30 * time.Second // Redis restarted -> a send is delivered again
	outageReadyLimit   = 30 * time.Second // /readyz follows the backplane
	outageCallLimit    = 10 * time.Second // one invocation
)

// TestNodeSurvivesRedisOutage runs a node on a standalone redis-server with a Go client
// connected, stops Redis, and checks that sends fail loudly (an invocation error naming the
// backplane) while the node keeps serving local calls and /readyz reports the outage; then
// restarts Redis and checks that the node recovers by itself. A second node with its own client
// (the peer) checks that the cross-node path recovers too (the node republishes, the peer
// resubscribes).
func TestNodeSurvivesRedisOutage(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := buildNode(t, root)
	rs := redistest.StartStandalone(t)
	conn := rs.Addr + ",channelPrefix=" + appPrefix
	n := &nodeOnRedis{name: "node", id: "interop-outage-node", args: []string{"--redis", conn}}
	peer := &nodeOnRedis{name: "peer", id: "interop-outage-peer", args: []string{"--redis", conn}}
	startNodesOnRedis(t, bin, []*nodeOnRedis{n, peer})
	base := "http://" + n.addr

	httpc := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	t.Cleanup(httpc.CloseIdleConnections)
	status := func(path string) (int, error) {
		res, err := httpc.Get(base + path)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}

	tok := sign(t, jwtSecret, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	// dial connects a client to a node; what its "outage" handler gets goes to the channel.
	dial := func(addr string) (*client.Conn, chan string) {
		got := make(chan string, 4096)
		ctx, cancel := context.WithTimeout(context.Background(), outageCallLimit)
		defer cancel()
		c, err := client.Dial(ctx, "http://"+addr+"/hubs/"+hub1, &client.Options{
			Protocol:    "json",
			AccessToken: func(context.Context) (string, error) { return tok, nil },
			HTTPClient:  httpc,
			Handlers: map[string]any{"outage": func(s string) {
				select {
				case got <- s:
				default:
				}
			}},
		})
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), outageCallLimit)
			defer cancel()
			_ = c.Close(ctx)
		})
		return c, got
	}
	c, got := dial(n.addr)
	pc, peerGot := dial(peer.addr)
	call := func(target string, args ...any) error {
		ctx, cancel := context.WithTimeout(context.Background(), outageCallLimit)
		defer cancel()
		_, err := c.Invoke(ctx, target, args...)
		return err
	}
	// awaitOn waits (bounded) for want on a client's handler, returning what else arrived meanwhile.
	awaitOn := func(c *client.Conn, got chan string, want string, limit time.Duration) (others []string, ok bool) {
		timer := time.NewTimer(limit)
		defer timer.Stop()
		for {
			select {
			case s := <-got:
				if s == want {
					return others, true
				}
				others = append(others, s)
			case <-timer.C:
				return others, false
			case <-c.Done():
				t.Fatalf("a client connection ended: %v", c.Err())
			}
		}
	}
	await := func(want string, limit time.Duration) ([]string, bool) { return awaitOn(c, got, want, limit) }

	if err := call("SendToAll", "outage", "before"); err != nil {
		t.Fatalf("SendToAll with Redis up: %v", err)
	}
	if _, ok := await("before", outageCallLimit); !ok {
		t.Fatal("SendToAll with Redis up was not delivered")
	}
	if _, ok := awaitOn(pc, peerGot, "before", outageCallLimit); !ok {
		t.Fatal("SendToAll with Redis up did not reach the peer node's client")
	}

	// --- Redis goes away
	rs.Stop()
	stopped := time.Now()
	var sendErr error
	succeeded := 0
	for i := 0; ; i++ {
		sendErr = call("SendToAll", "outage", fmt.Sprintf("during-%d", i))
		if sendErr != nil {
			break
		}
		succeeded++
		if time.Since(stopped) > outageFailLimit {
			t.Fatalf("SendToAll kept succeeding for %v after Redis was stopped (%d sends): a send that cannot reach the backplane must fail", outageFailLimit, succeeded)
		}
		time.Sleep(50 * time.Millisecond) // pacing a retry against an external process
	}
	firstFail := time.Since(stopped)
	t.Logf("Redis stopped -> first failing SendToAll: %v (%d sends succeeded before)", firstFail.Round(time.Millisecond), succeeded)
	if succeeded > 0 {
		t.Errorf("%d SendToAll invocation(s) after Redis was stopped reported success: a send that cannot reach the backplane must fail (design: never a silent loss)", succeeded)
	}
	var he *client.HubError
	switch {
	case !errors.As(sendErr, &he):
		t.Errorf("SendToAll during the outage failed with %v (%T), want an invocation error from the hub", sendErr, sendErr)
	case !strings.Contains(strings.ToLower(he.Message), "backplane"):
		t.Errorf("SendToAll during the outage failed with %q: the message does not name the backplane", he.Message)
	default:
		t.Logf("SendToAll during the outage: %q", he.Message)
	}

	var notReady time.Duration
	for deadline := time.Now().Add(outageReadyLimit); ; {
		code, err := status("/readyz")
		if err == nil && code == http.StatusServiceUnavailable {
			notReady = time.Since(stopped)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d (%v) %v after Redis was stopped, want 503", code, err, outageReadyLimit)
		}
		time.Sleep(50 * time.Millisecond) // polling an external process
	}
	t.Logf("Redis stopped -> /readyz 503: %v", notReady.Round(time.Millisecond))
	if code, err := status("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz during the outage: %d, %v; want 200", code, err)
	}
	for _, v := range []string{"local", "echo ✓ during the outage"} {
		ctx, cancel := context.WithTimeout(context.Background(), outageCallLimit)
		echo, err := client.InvokeAs[string](ctx, c, "Echo", v)
		cancel()
		if err != nil || echo != v {
			t.Errorf("Echo(%q) during the outage = %q, %v", v, echo, err)
		}
	}
	if err := call("SendToAll", "outage", "still down"); err == nil {
		t.Errorf("SendToAll succeeded while Redis is still down")
	}

	// --- Redis comes back
	rs.Restart(t)
	restarted := time.Now()
	var delivered string
	attempts, failures := 0, 0
	var lastErr error
	for delivered == "" {
		if time.Since(restarted) > outageRecoverLimit {
			t.Fatalf("no SendToAll was delivered within %v of the Redis restart (%d attempts, last error: %v)", outageRecoverLimit, attempts, lastErr)
		}
		msg := fmt.Sprintf("after-%d", attempts)
		attempts++
		if lastErr = call("SendToAll", "outage", msg); lastErr != nil {
			failures++
			time.Sleep(100 * time.Millisecond) // pacing a retry against an external process
			continue
		}
		if _, ok := await(msg, outageCallLimit); !ok {
			t.Fatalf("SendToAll(%q) succeeded after the restart but was not delivered within %v", msg, outageCallLimit)
		}
		delivered = msg
	}
	recovered := time.Since(restarted)
	t.Logf("Redis restarted -> first delivered SendToAll: %v (%d attempts failed before; last error: %v)", recovered.Round(time.Millisecond), failures, lastErr)

	// exactly once: a marker through the connection's own queue comes after any duplicate
	if err := call("SendToConnection", c.ConnectionID(), "outage", "marker"); err != nil {
		t.Fatalf("SendToConnection to itself after the restart: %v", err)
	}
	others, ok := await("marker", outageCallLimit)
	if !ok {
		t.Fatal("the marker sent to itself after the restart was not delivered")
	}
	for _, s := range others {
		if s == delivered {
			t.Errorf("%q was delivered twice after the restart", s)
		}
	}
	if err := call("SendToAll", "outage", "again"); err != nil {
		t.Errorf("a second SendToAll after recovery: %v", err)
	} else if _, ok := await("again", outageCallLimit); !ok {
		t.Errorf("a second SendToAll after recovery was not delivered")
	}

	// the cross-node path: sends from the node reach the peer's client again (the peer
	// resubscribed); a send published before the peer resubscribed may be lost (a counted gap),
	// so this retries with fresh messages, bounded.
	for i := 0; ; i++ {
		if time.Since(restarted) > outageRecoverLimit {
			t.Fatalf("no SendToAll reached the peer node's client within %v of the Redis restart (%d attempts)", outageRecoverLimit, i)
		}
		msg := fmt.Sprintf("cross-%d", i)
		if err := call("SendToAll", "outage", msg); err != nil {
			time.Sleep(100 * time.Millisecond) // pacing a retry against an external process
			continue
		}
		if _, ok := awaitOn(pc, peerGot, msg, time.Second); ok {
			t.Logf("Redis restarted -> first SendToAll delivered to the peer node: %v (%d attempt(s) before)", time.Since(restarted).Round(time.Millisecond), i)
			break
		}
	}

	for deadline := time.Now().Add(outageReadyLimit); ; {
		code, err := status("/readyz")
		if err == nil && code == http.StatusOK {
			t.Logf("Redis restarted -> /readyz 200: %v", time.Since(restarted).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d (%v) %v after Redis was restarted, want 200", code, err, outageReadyLimit)
		}
		time.Sleep(50 * time.Millisecond) // polling an external process
	}
}
