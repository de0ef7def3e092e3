package testkit

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hubfabric/hubfabric/hub"
)

// Scenario is a declarative simulation: nodes, clients, steps, faults and
// expectations, one per line. See testdata/*.scn and the README for the
// format:
//
//	# comment
//	name   two nodes, one room
//	nodes  2                      (default 2)
//	seed   7                      (default 1; --seed and -testkit.seed win)
//	apps   a b                    (channel prefix of node i: apps[i%len]; letters, digits, '.', '_', '-')
//	max-outbound 1000             (every node's MaxOutboundBytes; default 1 MiB)
//	client a node=1 user=alice    (creates and connects; nodes count from 1)
//	join a room | leave a room    (waits for the completion)
//	add a b room | remove a b room  (a puts b's connection in room, any node)
//	send a all|others|group:G|others-in-group:G|user:U|client:B|except:B,C
//	send! ...                     (same, waiting for the completion)
//	settle | advance 15s
//	delay 5ms | partition 2 | heal 2 | outage | restore
//	kill 2 | restart 2 | drop a | reconnect a node=2 | slow a 50ms | silent a
//	expect a received N | expect a connected | expect a closed
//	expect a last ok | expect a last error
//	check                         (invariants; also run at the end)
type Scenario struct {
	Name  string
	Nodes int
	Seed  uint64
	Apps  []string
	// MaxOutbound, when positive, is every node's MaxOutboundBytes.
	MaxOutbound int
	Steps       []Step
}

// Step is one line of a scenario.
type Step struct {
	Line int
	Op   string
	Args []string
}

func (s Step) String() string { return strings.TrimSpace(s.Op + " " + strings.Join(s.Args, " ")) }

// ParseScenario reads a scenario.
func ParseScenario(r io.Reader) (*Scenario, error) {
	sc := &Scenario{Nodes: 2, Seed: 1}
	in := bufio.NewScanner(r)
	for n := 1; in.Scan(); n++ {
		line := strings.TrimSpace(in.Text())
		if i := strings.Index(line, "#"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		var err error
		switch f[0] {
		case "name":
			sc.Name = strings.TrimSpace(strings.TrimPrefix(line, "name"))
		case "nodes":
			sc.Nodes, err = argIntIn(f, 1, 1, maxScenarioNodes)
		case "seed":
			var v int
			v, err = argInt(f, 1)
			sc.Seed = uint64(v)
		case "apps":
			sc.Apps = f[1:]
			for _, a := range sc.Apps {
				if err == nil {
					err = checkApp(a)
				}
			}
		case "max-outbound":
			sc.MaxOutbound, err = argIntIn(f, 1, 1, 1<<30)
		case "client", "join", "leave", "add", "remove", "send", "send!", "settle", "advance", "delay",
			"partition", "heal", "outage", "restore", "kill", "restart", "drop", "reconnect", "slow", "silent", "expect", "check":
			sc.Steps = append(sc.Steps, Step{Line: n, Op: f[0], Args: f[1:]})
		default:
			err = fmt.Errorf("unknown step %q", f[0])
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	return sc, in.Err()
}

// LoadScenario parses a file.
func LoadScenario(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc, err := ParseScenario(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if sc.Name == "" {
		sc.Name = path
	}
	return sc, nil
}

func argInt(f []string, i int) (int, error) {
	if len(f) <= i {
		return 0, fmt.Errorf("%s: missing number", f[0])
	}
	return strconv.Atoi(f[i])
}

// maxScenarioNodes bounds a scenario's cluster: each node is a whole actor
// tree.
const maxScenarioNodes = 64

// argIntIn is argInt for a number that must lie in [lo, hi].
func argIntIn(f []string, i, lo, hi int) (int, error) {
	v, err := argInt(f, i)
	if err != nil {
		return 0, err
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%s: %d is out of range [%d, %d]", f[0], v, lo, hi)
	}
	return v, nil
}

// argDuration parses a step's duration, which must not be negative.
func argDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		err = fmt.Errorf("duration %s is negative", s)
	}
	return d, err
}

// Run runs the scenario on a new simulated cluster with seed (0: the
// scenario's), checks the invariants at the end and returns the cluster.
// Step errors and failed expectations fail t.
func (sc *Scenario) Run(t TB, seed uint64) *Cluster {
	t.Helper()
	if seed == 0 {
		seed = sc.Seed
	}
	opts := []Option{Nodes(sc.Nodes), Seed(seed)}
	if len(sc.Apps) > 0 {
		opts = append(opts, Prefixes(sc.Apps...))
	}
	if n := sc.MaxOutbound; n > 0 {
		opts = append(opts, Configure(func(c *hub.Config) { c.MaxOutboundBytes = n }))
	}
	c := NewCluster(t, opts...)
	c.Note("scenario %q", sc.Name)
	for _, st := range sc.Steps {
		c.Note("step %d: %s", st.Line, st)
		if err := c.step(st); err != nil {
			t.Errorf("line %d (%s): %v", st.Line, st, err)
			return c
		}
	}
	c.Check()
	return c
}

func (c *Cluster) nodeArg(s string) (*Node, error) {
	s = strings.TrimPrefix(s, "node=")
	s = strings.TrimPrefix(s, "n")
	i, err := strconv.Atoi(s)
	if err != nil || i < 1 || i > len(c.nodes) {
		return nil, fmt.Errorf("no node %q", s)
	}
	return c.nodes[i-1], nil
}

func (c *Cluster) clientArg(s string) (*Client, error) {
	cl := c.byName[s]
	if cl == nil {
		return nil, fmt.Errorf("no client %q", s)
	}
	return cl, nil
}

func need(st Step, n int) error {
	if len(st.Args) < n {
		return fmt.Errorf("%s needs %d argument(s)", st.Op, n)
	}
	return nil
}

func (c *Cluster) step(st Step) error {
	a := st.Args
	switch st.Op {
	case "settle":
		c.Settle()
		return nil
	case "check":
		if v := c.Check(); len(v) > 0 {
			return fmt.Errorf("%d invariant violation(s)", len(v))
		}
		return nil
	case "outage":
		c.Outage(true)
		return nil
	case "restore":
		c.Outage(false)
		return nil
	case "advance", "delay":
		if err := need(st, 1); err != nil {
			return err
		}
		d, err := argDuration(a[0])
		if err != nil {
			return err
		}
		if st.Op == "advance" {
			c.Advance(d)
		} else {
			c.Delay(d)
		}
		return nil
	case "partition", "heal", "kill", "restart":
		if err := need(st, 1); err != nil {
			return err
		}
		n, err := c.nodeArg(a[0])
		if err != nil {
			return err
		}
		switch st.Op {
		case "partition":
			n.Partition(true)
		case "heal":
			n.Partition(false)
		case "kill":
			n.Kill()
		case "restart":
			n.Restart()
		}
		return nil
	case "client":
		if err := need(st, 1); err != nil {
			return err
		}
		node, user := c.nodes[0], ""
		for _, kv := range a[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "node":
				n, err := c.nodeArg(v)
				if err != nil {
					return err
				}
				node = n
			case "user":
				user = v
			default:
				return fmt.Errorf("unknown client option %q", kv)
			}
		}
		c.Client(a[0], user, node)
		return nil
	}
	if err := need(st, 1); err != nil {
		return err
	}
	cl, err := c.clientArg(a[0])
	if err != nil {
		return err
	}
	switch st.Op {
	case "join", "leave":
		if err := need(st, 2); err != nil {
			return err
		}
		if st.Op == "join" {
			cl.Join(a[1]).Wait()
		} else {
			cl.Leave(a[1]).Wait()
		}
	case "add", "remove":
		if err := need(st, 3); err != nil {
			return err
		}
		other, err := c.clientArg(a[1])
		if err != nil {
			return err
		}
		if st.Op == "add" {
			cl.AddToGroup(other, a[2]).Wait()
		} else {
			cl.RemoveFromGroup(other, a[2]).Wait()
		}
	case "send", "send!":
		if err := need(st, 2); err != nil {
			return err
		}
		call, err := c.sendStep(cl, a[1])
		if err != nil {
			return err
		}
		if st.Op == "send!" {
			call.Wait()
		}
	case "drop":
		cl.Drop()
	case "silent":
		cl.Silence()
	case "reconnect":
		node := cl.node
		if len(a) > 1 {
			if node, err = c.nodeArg(a[1]); err != nil {
				return err
			}
		}
		return cl.Connect(node)
	case "slow":
		if err := need(st, 2); err != nil {
			return err
		}
		d, err := argDuration(a[1])
		if err != nil {
			return err
		}
		cl.Slow(d)
	case "expect":
		return c.expect(cl, a[1:])
	default:
		return fmt.Errorf("unknown step %q", st.Op)
	}
	return nil
}

func (c *Cluster) sendStep(cl *Client, route string) (*Call, error) {
	kind, name, _ := strings.Cut(route, ":")
	switch kind {
	case "all":
		return cl.SendAll(), nil
	case "others":
		return cl.SendOthers(), nil
	case "group":
		return cl.SendGroup(name), nil
	case "others-in-group":
		return cl.SendOthersInGroup(name), nil
	case "user":
		return cl.SendUser(name), nil
	case "client":
		to, err := c.clientArg(name)
		if err != nil {
			return nil, err
		}
		return cl.SendTo(to), nil
	case "except":
		var ex []*Client
		for _, n := range strings.Split(name, ",") {
			o, err := c.clientArg(n)
			if err != nil {
				return nil, err
			}
			ex = append(ex, o)
		}
		return cl.SendAllExcept(ex...), nil
	}
	return nil, fmt.Errorf("unknown route %q", route)
}

func (c *Cluster) expect(cl *Client, a []string) error {
	if len(a) == 0 {
		return fmt.Errorf("expect what?")
	}
	switch a[0] {
	case "received":
		if len(a) < 2 {
			return fmt.Errorf("expect received needs a count")
		}
		want, err := strconv.Atoi(a[1])
		if err != nil {
			return err
		}
		c.Settle()
		got := 0
		for _, r := range cl.Received {
			if r.Target == "msg" {
				got++
			}
		}
		if got != want {
			return fmt.Errorf("%s received %d messages, want %d", cl.name, got, want)
		}
	case "connected", "closed":
		c.Settle()
		if cl.Connected() != (a[0] == "connected") {
			return fmt.Errorf("%s: connected=%v, want %s", cl.name, cl.Connected(), a[0])
		}
	case "last":
		if len(a) < 2 {
			return fmt.Errorf("expect last needs ok or error")
		}
		if cl.lastCall == nil {
			return fmt.Errorf("%s made no call", cl.name)
		}
		call := cl.lastCall.Wait()
		if (call.Error == "") != (a[1] == "ok") {
			return fmt.Errorf("%s's last call %s: error %q, want %s", cl.name, call.Method, call.Error, a[1])
		}
	default:
		return fmt.Errorf("unknown expectation %q", a[0])
	}
	return nil
}
