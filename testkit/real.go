package testkit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hubfabric/hubfabric/auth"
	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

// RunFileReal runs the scenario in path against real nodes (WebSocket
// transport, the Go client) sharing a real redis-server started for the
// run. Timing is real, so the run is not reproducible byte for byte: the
// last line, "trace sha256:<hex>", hashes the outcome (what each client
// received, sorted), which matches between runs whenever the scenario's
// outcome does not depend on timing. Faults that only the simulation can
// inject (delay, partition, heal, slow, silent) are reported and skipped; outage
// kills and restarts the redis-server; kill shuts a node down.
func RunFileReal(ctx context.Context, path, redisServer string, w io.Writer) (string, error) {
	sc, err := LoadScenario(path)
	if err != nil {
		return "", err
	}
	r := &realRun{ctx: ctx, w: w, sc: sc, bin: redisServer, clients: map[string]*realClient{}, secret: []byte("testkit-real-token-secret-32byte")}
	defer r.close()
	fmt.Fprintf(w, "scenario %q (real): %d nodes\n", sc.Name, sc.Nodes)
	redisbp.RouteLibraryLogs(slog.New(slog.DiscardHandler))
	if err := r.startRedis(); err != nil {
		return "", err
	}
	for i := 0; i < sc.Nodes; i++ {
		app := "hubfabric"
		if len(sc.Apps) > 0 {
			app = sc.Apps[i%len(sc.Apps)]
		}
		n := &realNode{name: fmt.Sprintf("n%d", i+1), app: app}
		r.nodes = append(r.nodes, n)
		if err := r.startNode(n); err != nil {
			return "", err
		}
	}
	var failures []string
	for _, st := range sc.Steps {
		fmt.Fprintf(w, "  %3d  %s\n", st.Line, st)
		if err := r.step(st); err != nil {
			failures = append(failures, fmt.Sprintf("line %d (%s): %v", st.Line, st, err))
			fmt.Fprintf(w, "       FAILED: %v\n", err)
		}
	}
	r.settle()
	failures = append(failures, r.duplicates()...)
	hash := r.hash()
	if len(failures) > 0 {
		fmt.Fprintln(w, "FAIL")
		err = fmt.Errorf("scenario failed:\n%s", strings.Join(failures, "\n"))
	} else {
		fmt.Fprintln(w, "ok: expectations met, no duplicates")
	}
	fmt.Fprintf(w, "trace %s\n", hash)
	return hash, err
}

type realRun struct {
	ctx     context.Context
	w       io.Writer
	sc      *Scenario
	bin     string
	dir     string
	port    int
	redis   *exec.Cmd
	redisWC chan struct{}
	nodes   []*realNode
	clients map[string]*realClient
	secret  []byte
	calls   sync.WaitGroup
}

type realNode struct {
	name, app string
	node      *hub.Node
	srv       *http.Server
	url       string
	alive     bool
}

type realClient struct {
	name, user string
	conn       *client.Conn
	mu         sync.Mutex
	got        []string
	last       chan error
	lastErr    error
	lastSet    bool
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (r *realRun) startRedis() error {
	if r.dir == "" {
		d, err := os.MkdirTemp("", "testkit-redis-")
		if err != nil {
			return err
		}
		r.dir = d
		if r.port, err = freePort(); err != nil {
			return err
		}
	}
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir, "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", r.bin, err)
	}
	r.redis, r.redisWC = cmd, make(chan struct{})
	wc := r.redisWC
	go func() { _ = cmd.Wait(); close(wc) }()
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port))
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("redis-server did not start")
}

func (r *realRun) stopRedis() {
	if r.redis != nil {
		_ = r.redis.Process.Kill()
		<-r.redisWC
		r.redis = nil
	}
}

var userHeader = "X-Testkit-User"

func (r *realRun) startNode(n *realNode) error {
	bp, err := redisbp.NewFromString(fmt.Sprintf("127.0.0.1:%d,abortConnect=false,channelPrefix=%s:", r.port, n.app))
	if err != nil {
		return err
	}
	node, err := hub.New(hub.Config{
		NodeID: n.name, Backplane: bp, TokenSecret: r.secret,
		GroupAckTimeout: 2 * time.Second, DetailedErrors: true,
		Authenticator: auth.AuthenticatorFunc(func(req *http.Request) (auth.Identity, error) {
			return auth.Identity{UserID: req.Header.Get(userHeader)}, nil
		}),
	})
	if err != nil {
		return err
	}
	if err := node.Register("relay", Relay{}); err != nil {
		return err
	}
	if err := node.Start(r.ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/hubs/", http.StripPrefix("/hubs", node.Handler()))
	n.srv = &http.Server{Handler: mux}
	go func() { _ = n.srv.Serve(ln) }()
	n.node, n.url, n.alive = node, "http://"+ln.Addr().String()+"/hubs/relay", true
	return nil
}

func (r *realRun) stopNode(n *realNode) {
	if !n.alive {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	_ = n.node.Shutdown(ctx)
	_ = n.srv.Close()
	n.alive = false
}

func (r *realRun) close() {
	for _, cl := range r.clients {
		if cl.conn != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = cl.conn.Close(ctx)
			cancel()
		}
	}
	for _, n := range r.nodes {
		r.stopNode(n)
	}
	r.stopRedis()
	if r.dir != "" {
		_ = os.RemoveAll(r.dir)
	}
}

func (r *realRun) node(s string) (*realNode, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "node="), "n")
	i, err := strconv.Atoi(s)
	if err != nil || i < 1 || i > len(r.nodes) {
		return nil, fmt.Errorf("no node %q", s)
	}
	return r.nodes[i-1], nil
}

func (r *realRun) dial(cl *realClient, n *realNode) error {
	h := http.Header{}
	if cl.user != "" {
		h.Set(userHeader, cl.user)
	}
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, n.url, &client.Options{Header: h, Handlers: map[string]any{
		"msg": func(tag string) {
			cl.mu.Lock()
			cl.got = append(cl.got, tag)
			cl.mu.Unlock()
		},
	}})
	if err != nil {
		return err
	}
	cl.conn = conn
	return nil
}

func (r *realRun) invoke(cl *realClient, wait bool, method string, args ...any) error {
	if cl.conn == nil {
		return errors.New("not connected")
	}
	done := make(chan error, 1)
	cl.last = done
	r.calls.Add(1)
	go func() {
		defer r.calls.Done()
		ctx, cancel := context.WithTimeout(r.ctx, 15*time.Second)
		defer cancel()
		_, err := cl.conn.Invoke(ctx, method, args...)
		done <- err
	}()
	if wait {
		err := <-done
		cl.lastErr, cl.lastSet = err, true
		cl.last = nil
		return nil
	}
	return nil
}

func (r *realRun) lastResult(cl *realClient) (error, bool) {
	if cl.last != nil {
		cl.lastErr, cl.lastSet = <-cl.last, true
		cl.last = nil
	}
	return cl.lastErr, cl.lastSet
}

// settle waits for every call, then until no client received anything for
// 300 ms (at most 10 s).
func (r *realRun) settle() {
	r.calls.Wait()
	count := func() int {
		n := 0
		for _, cl := range r.clients {
			cl.mu.Lock()
			n += len(cl.got)
			cl.mu.Unlock()
		}
		return n
	}
	last, since := count(), time.Now()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if n := count(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > 300*time.Millisecond {
			return
		}
	}
}

var realTag int

func (r *realRun) step(st Step) error {
	a := st.Args
	switch st.Op {
	case "settle", "check":
		r.settle()
		return nil
	case "advance":
		d, err := time.ParseDuration(a[0])
		if err != nil {
			return err
		}
		time.Sleep(min(d, 30*time.Second))
		return nil
	case "delay", "partition", "heal", "slow", "silent":
		fmt.Fprintf(r.w, "       (skipped: %s is simulation-only)\n", st.Op)
		return nil
	case "outage":
		r.stopRedis()
		return nil
	case "restore":
		if err := r.startRedis(); err != nil {
			return err
		}
		deadline := time.Now().Add(15 * time.Second)
		for _, n := range r.nodes {
			for n.alive && time.Now().Before(deadline) {
				if ok, _ := n.node.Ready(); ok {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		return nil
	case "kill", "restart":
		n, err := r.node(a[0])
		if err != nil {
			return err
		}
		r.stopNode(n)
		if st.Op == "restart" {
			return r.startNode(n)
		}
		return nil
	case "client":
		n := r.nodes[0]
		cl := &realClient{name: a[0]}
		for _, kv := range a[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "node":
				var err error
				if n, err = r.node(v); err != nil {
					return err
				}
			case "user":
				cl.user = v
			}
		}
		r.clients[cl.name] = cl
		return r.dial(cl, n)
	}
	cl := r.clients[a[0]]
	if cl == nil {
		return fmt.Errorf("no client %q", a[0])
	}
	other := func(name string) (*realClient, error) {
		o := r.clients[name]
		if o == nil || o.conn == nil {
			return nil, fmt.Errorf("no client %q", name)
		}
		return o, nil
	}
	switch st.Op {
	case "join":
		return r.invoke(cl, true, "Join", a[1])
	case "leave":
		return r.invoke(cl, true, "Leave", a[1])
	case "add", "remove":
		o, err := other(a[1])
		if err != nil {
			return err
		}
		m := map[string]string{"add": "Add", "remove": "Remove"}[st.Op]
		return r.invoke(cl, true, m, o.conn.ConnectionID(), a[2])
	case "send", "send!":
		realTag++
		tag := fmt.Sprintf("%s:%d", cl.name, realTag)
		kind, name, _ := strings.Cut(a[1], ":")
		wait := st.Op == "send!"
		switch kind {
		case "all":
			return r.invoke(cl, wait, "All", tag)
		case "others":
			return r.invoke(cl, wait, "Others", tag)
		case "group":
			return r.invoke(cl, wait, "Group", name, tag)
		case "others-in-group":
			return r.invoke(cl, wait, "OthersInGroup", name, tag)
		case "user":
			return r.invoke(cl, wait, "User", name, tag)
		case "client":
			o, err := other(name)
			if err != nil {
				return err
			}
			return r.invoke(cl, wait, "Client", o.conn.ConnectionID(), tag)
		case "except":
			var ids []string
			for _, n := range strings.Split(name, ",") {
				o, err := other(n)
				if err != nil {
					return err
				}
				ids = append(ids, o.conn.ConnectionID())
			}
			return r.invoke(cl, wait, "AllExcept", ids, tag)
		}
		return fmt.Errorf("unknown route %q", a[1])
	case "drop":
		if cl.conn != nil {
			ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
			defer cancel()
			_ = cl.conn.Close(ctx)
		}
		return nil
	case "reconnect":
		n, err := r.node(a[len(a)-1])
		if len(a) < 2 {
			return errors.New("reconnect needs a node with --real")
		}
		if err != nil {
			return err
		}
		return r.dial(cl, n)
	case "expect":
		switch a[1] {
		case "received":
			r.settle()
			want, _ := strconv.Atoi(a[2])
			cl.mu.Lock()
			got := len(cl.got)
			cl.mu.Unlock()
			if got != want {
				return fmt.Errorf("%s received %d messages, want %d", cl.name, got, want)
			}
		case "connected", "closed":
			r.settle()
			connected := false
			if cl.conn != nil {
				select {
				case <-cl.conn.Done():
				default:
					connected = true
				}
			}
			if connected != (a[1] == "connected") {
				return fmt.Errorf("%s: connected=%v, want %s", cl.name, connected, a[1])
			}
		case "last":
			err, ok := r.lastResult(cl)
			if !ok {
				return fmt.Errorf("%s made no call", cl.name)
			}
			if (err == nil) != (a[2] == "ok") {
				return fmt.Errorf("%s's last call: %v, want %s", cl.name, err, a[2])
			}
		}
		return nil
	}
	return fmt.Errorf("unknown step %q", st.Op)
}

func (r *realRun) duplicates() []string {
	var out []string
	for _, cl := range r.clients {
		seen := map[string]bool{}
		cl.mu.Lock()
		for _, t := range cl.got {
			if seen[t] {
				out = append(out, fmt.Sprintf("duplicate: %s received %s twice", cl.name, t))
			}
			seen[t] = true
		}
		cl.mu.Unlock()
	}
	return out
}

func (r *realRun) hash() string {
	names := make([]string, 0, len(r.clients))
	for n := range r.clients {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		cl := r.clients[n]
		cl.mu.Lock()
		got := append([]string(nil), cl.got...)
		cl.mu.Unlock()
		sort.Strings(got)
		fmt.Fprintf(h, "%s: %s\n", n, strings.Join(got, " "))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
