// Package testkit runs a whole hubfabric cluster inside one test,
// deterministically: N nodes in one process on a simulated backplane, with
// simulated clients (no sockets: an in-memory pipe under the real
// connection code), running the real hub, group, connection
// and bridge actors, the real hub method dispatch and the real SignalR
// encoders and parsers. One seeded scheduler orders every mailbox run,
// backplane delivery, goroutine and timer over a virtual clock, so one seed
// gives one trace, byte for byte, on any machine, and a 10 s timeout costs
// microseconds.
//
// # How it works
//
//   - Every actor's Props carry a dispatcher whose Schedule queues the
//     mailbox run as a scheduler task, and the node's runtime
//     (internal/seam: goroutines, timers, clock, waits for an actor's
//     answer) is the scheduler's: a goroutine (a hub method, a lifecycle
//     hook, the bridge's publish and subscription workers, a connection's
//     writer) runs only while the scheduler hands it the baton, and gives it
//     back when it waits for an actor's answer or ends; timers fire on the
//     virtual clock; a wait for an actor's answer is a reply address served
//     by the scheduler (not a protoactor future, whose timeout uses the real
//     clock). The testkit sets these seams through an internal hook, not
//     through hub.Config.
//   - The simulated backplane (Bus) delivers each message as a task, keeping
//     order per publisher, channel and subscriber as Redis does and letting
//     the seed interleave the rest; it owns each node's channel prefix, as
//     the Redis backplane does; faults: Delay, Node.Partition, Outage,
//     Node.Kill and Node.Restart, Client.Drop, Client.Slow.
//   - Each simulated client's connection runs the node's real connection
//     code (internal/conn: the bounded outbound queue with the greeting
//     hold, coalescing and the too-slow Close, keep-alive and the client
//     timeout) over an in-memory pipe, as the WebSocket transport runs it
//     over a socket; the client parses what arrives with the real protocol
//     package, handshake answer first.
//   - Every step is a trace line (virtual time, what ran, who sent and
//     received what); Trace.Hash is its sha256. On failure the seed and the
//     readable trace are logged; -testkit.seed=N replays a seed.
//
// Keep-alive runs on the virtual clock too: the node side of every
// simulated connection runs the real heartbeat (a Ping after 15 s without
// sending, a Close after 30 s without receiving) and clients ping every
// 15 s unless Client.Silence stops them. These timers run as virtual
// time passes (Advance) but do not keep Settle going by themselves.
//
// Limit: a hub method that blocks on its own channels, locks or goroutines
// (or a server stream or upload stream, which are pumped through channels)
// is outside the simulation's determinism; the scheduler reports a
// goroutine blocked for 20 s of real time.
//
// # Invariants
//
// Cluster.Check settles the simulation and checks, for every message sent
// with the client send helpers (SendAll, SendGroup, ...; they call the
// Relay hub's methods): no duplicates; per sender and route order;
// exclusions; membership timing (nothing from a group after Leave
// completed, everything sent after Join completed while healthy);
// prefix isolation (Prefixes); and that a message that did not arrive was
// reported (an error to the sender, a backplane Down or Gap event, or the
// recipient's connection ended).
//
// # Scenarios and exploration
//
// Scenario files (testdata/*.scn, format in Scenario) run from go test and
// from the command line:
//
//	go run ./cmd/scenario [--seed N] [--real] testkit/testdata/09-outage.scn
//
// which prints the steps and, last, "trace sha256:<hex>". TestExplore
// generates random operation and fault sequences with pgregory.net/rapid;
// a long exploration:
//
//	go test ./testkit -run TestExplore -rapid.checks=20000 -timeout 1h
//
// # Example: testing a user hub
//
// Register the hub exactly as in production, connect clients, invoke,
// settle, look at what they received:
//
//	type Chat struct{}
//
//	func (Chat) Say(c *hub.Context, room, text string) error {
//		return c.Clients.Group(room).Send(c, "said", c.UserID, text)
//	}
//
//	func (Chat) Enter(c *hub.Context, room string) error {
//		return c.Groups.Add(c, c.ConnectionID, room)
//	}
//
//	func TestChat(t *testing.T) {
//		c := testkit.NewCluster(t, testkit.Nodes(2), testkit.Seed(42), testkit.Hub("chat", Chat{}))
//		alice := c.Client("alice", "alice", c.Node(0))
//		bob := c.Client("bob", "bob", c.Node(1))
//		if err := bob.Invoke("Enter", "lobby").Wait().Err(); err != nil {
//			t.Fatal(err)
//		}
//		c.Node(1).Partition(true) // faults are one call each
//		c.Node(1).Partition(false)
//		c.Settle()
//		if err := alice.Invoke("Say", "lobby", "hi").Wait().Err(); err != nil {
//			t.Fatal(err)
//		}
//		c.Settle()
//		if len(bob.Received) != 1 || bob.Received[0].Target != "said" {
//			t.Fatalf("bob got %+v", bob.Received)
//		}
//		c.Check() // the invariants, for sends made with the helpers
//	}
//
// The same test, runnable, is ExampleNewCluster in example_test.go.
package testkit
