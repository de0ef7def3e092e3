package testkit_test

import (
	"fmt"
	"testing"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/testkit"
)

// Chat is a user hub, registered exactly as in production.
type Chat struct{}

// Say sends text to a room.
func (Chat) Say(c *hub.Context, room, text string) error {
	return c.Clients.Group(room).Send(c, "said", c.UserID, text)
}

// Enter puts the caller in a room.
func (Chat) Enter(c *hub.Context, room string) error {
	return c.Groups.Add(c, c.ConnectionID, room)
}

func testChat(t testkit.TB) {
	c := testkit.NewCluster(t, testkit.Nodes(2), testkit.Seed(42), testkit.Hub("chat", Chat{}))
	alice := c.Client("alice", "alice", c.Node(0))
	bob := c.Client("bob", "bob", c.Node(1))
	if err := bob.Invoke("Enter", "lobby").Wait().Err(); err != nil {
		t.Fatalf("enter: %v", err)
	}
	c.Node(1).Partition(true)
	c.Node(1).Partition(false)
	c.Settle()
	if err := alice.Invoke("Say", "lobby", "hi").Wait().Err(); err != nil {
		t.Fatalf("say: %v", err)
	}
	c.Settle()
	if len(bob.Received) != 1 || bob.Received[0].Target != "said" {
		t.Fatalf("bob got %+v", bob.Received)
	}
	fmt.Println(bob.Received[0].Target, bob.Received[0].Args)
	c.Check()
}

func TestChatExample(t *testing.T) { testChat(t) }

// ExampleNewCluster tests a user hub on a two-node simulated cluster.
func ExampleNewCluster() {
	t := &recorder{}
	defer t.done()
	func() {
		defer func() { _ = recover() }()
		testChat(t)
	}()
	fmt.Println("failures:", len(t.errs))
	// Output:
	// said ["alice" "hi"]
	// failures: 0
}
