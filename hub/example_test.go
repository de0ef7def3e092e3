package hub_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

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
