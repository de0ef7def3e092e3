package hub_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/golang-jwt/jwt/v5"

	"github.com/hubfabric/hubfabric/actors"
	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

// Greeter is a hub: every exported method taking a *hub.Context first can
// be invoked by clients.
type Greeter struct{}

// Greet returns a greeting; clients call it with invoke("Greet", name).
func (Greeter) Greet(_ *hub.Context, name string) (string, error) {
	if name == "" {
		return "", hub.Errorf("name is empty") // the client sees this text
	}
	return "hello, " + name, nil
}

// Shout sends text to every other client of the hub.
func (Greeter) Shout(c *hub.Context, text string) error {
	return c.Clients.Others().Send(c, "shout", text)
}

// JoinRoom puts the caller in a group.
func (Greeter) JoinRoom(c *hub.Context, room string) error {
	return c.Groups.Add(c, c.ConnectionID, room)
}

// Ticks streams n numbers to the caller.
func (Greeter) Ticks(c *hub.Context, n int) (<-chan int, error) {
	ch := make(chan int)
	go func() {
		defer close(ch)
		for i := 1; i <= n; i++ {
			select {
			case ch <- i:
			case <-c.Done():
				return
			}
		}
	}()
	return ch, nil
}

// Example declares a hub, serves it, and talks to it with the Go client.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	node, err := hub.New(hub.Config{}) // in-memory backplane, anonymous users
	if err != nil {
		panic(err)
	}
	if err := node.Register("greeter", Greeter{}); err != nil {
		panic(err)
	}
	if err := node.Start(ctx); err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hubs/", node.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer node.Shutdown(ctx)

	conn, err := client.Dial(ctx, srv.URL+"/hubs/greeter", nil)
	if err != nil {
		panic(err)
	}
	defer conn.Close(ctx)
	got := make(chan string, 1)
	conn.On("room", func(text string) { got <- text })

	greeting, err := client.InvokeAs[string](ctx, conn, "Greet", "gopher")
	fmt.Println(greeting, err)
	_, err = conn.Invoke(ctx, "Greet", "")
	fmt.Println(err)

	if _, err := conn.Invoke(ctx, "JoinRoom", "lobby"); err != nil {
		panic(err)
	}
	// From outside any hub method: a HubContext.
	hc, _ := node.HubContext("greeter")
	if err := hc.Clients.Group("lobby").Send(ctx, "room", "welcome to the lobby"); err != nil {
		panic(err)
	}
	fmt.Println(<-got)

	// Output:
	// hello, gopher <nil>
	// client: server returned an error: An unexpected error occurred invoking 'Greet' on the server. HubException: name is empty
	// welcome to the lobby
}

// Presence shows the lifecycle hooks: OnConnected and OnDisconnected run
// once per connection, and may send like any hub method.
type Presence struct{}

// OnConnected announces a new connection to everybody else.
func (Presence) OnConnected(c *hub.Context) error {
	return c.Clients.Others().Send(c, "joined", c.UserID)
}

// OnDisconnected announces that a connection left.
func (Presence) OnDisconnected(c *hub.Context, err error) {
	_ = c.Clients.All().Send(c, "left", c.UserID)
}

// Example_streamsAndIdentity streams items to a client, takes user ids
// from JWTs (HS256, "sub"), runs the node's actors in an actor system of the
// application's, and shows the lifecycle hooks. (Upload streams: a method
// parameter of type <-chan T; see TestStreams.)
func Example_streamsAndIdentity() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	defer system.Shutdown()
	secret := []byte("example secret")
	authn, _ := auth.HS256(secret)
	node, _ := hub.New(hub.Config{ActorSystem: system, Authenticator: authn})
	_ = node.Register("greeter", Greeter{})
	_ = node.Register("presence", Presence{})
	_ = node.Start(ctx)
	mux := http.NewServeMux()
	mux.Handle("/hubs/", node.Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer node.Shutdown(ctx)

	token := func(user string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) {
			return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
		}
	}

	// A server stream: Ticks(3) yields 1, 2, 3.
	conn, err := client.Dial(ctx, srv.URL+"/hubs/greeter", &client.Options{AccessToken: token("ada"), Protocol: "messagepack"})
	if err != nil {
		panic(err)
	}
	defer conn.Close(ctx)
	stream, _ := conn.Stream(ctx, "Ticks", 3)
	var ticks []int
	for {
		if _, ok := stream.Next(ctx); !ok {
			break
		}
		var n int
		_ = stream.Bind(&n)
		ticks = append(ticks, n)
	}
	fmt.Println("ticks:", ticks)

	// The lifecycle hooks: bob is told that carol joined.
	joined := make(chan string, 1)
	bob, _ := client.Dial(ctx, srv.URL+"/hubs/presence", &client.Options{AccessToken: token("bob"), Handlers: map[string]any{
		"joined": func(user string) { joined <- user },
	}})
	defer bob.Close(ctx)
	carol, _ := client.Dial(ctx, srv.URL+"/hubs/presence", &client.Options{AccessToken: token("carol")})
	defer carol.Close(ctx)
	fmt.Println("joined:", <-joined)

	// Without a token the node refuses the connection.
	_, err = client.Dial(ctx, srv.URL+"/hubs/greeter", nil)
	fmt.Println("anonymous refused:", err != nil)

	// Output:
	// ticks: [1 2 3]
	// joined: carol
	// anonymous refused: true
}

// ExampleNode_HubPID runs an actor of the application's own in the node's
// actor system and has it send to the hub's clients by messaging the hub
// actor directly with the small public protocol of package actors.
func ExampleNode_HubPID() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	defer system.Shutdown()
	node, err := hub.New(hub.Config{ActorSystem: system})
	if err != nil {
		panic(err)
	}
	if err := node.Register("greeter", Greeter{}); err != nil {
		panic(err)
	}
	if err := node.Start(ctx); err != nil {
		panic(err)
	}
	srv := httptest.NewServer(node.Handler())
	defer srv.Close()
	defer node.Shutdown(ctx)

	conn, err := client.Dial(ctx, srv.URL+"/greeter", nil)
	if err != nil {
		panic(err)
	}
	defer conn.Close(ctx)
	got := make(chan string, 1)
	conn.On("news", func(text string) { got <- text })

	hubPID, err := node.HubPID("greeter")
	if err != nil {
		panic(err)
	}
	// An actor of the application: on "publish" it asks the hub actor to
	// send to every client, and reports the hub's answer.
	answers := make(chan error, 1)
	newsroom := system.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case string:
			req, err := actors.NewSendRequest(actors.Route{Kind: actors.RouteAll}, "news", m)
			if err != nil {
				answers <- err
				return
			}
			c.Request(hubPID, req)
		case *actors.SendResponse:
			answers <- m.Err
		}
	}))
	defer system.Root.Stop(newsroom)
	system.Root.Send(newsroom, "extra! extra!")
	fmt.Println("hub actor answered:", <-answers)
	fmt.Println("client got:", <-got)

	// Output:
	// hub actor answered: <nil>
	// client got: extra! extra!
}
