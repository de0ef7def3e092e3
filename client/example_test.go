package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/hubfabric/hubfabric/client"
)

// This example calls a hub method and binds its result. The hub here is the
// tests' fake server; use your hub's URL, such as
// "http://127.0.0.1:8080/hubs/chat".
func Example() {
	srv := newFakeServer()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := client.Dial(ctx, srv.url("/hub"), &client.Options{
		Protocol:  "messagepack",
		Reconnect: client.DefaultReconnect,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	sum, err := client.InvokeAs[int](ctx, conn, "Add", 2, 3)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum)
	// Output: 5
}

// Handlers bind the server's arguments to their parameters. A handler that
// returns a value answers a server invocation that expects a client result.
func ExampleConn_On() {
	srv := newFakeServer()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := client.Dial(ctx, srv.url("/hub"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	conn.On("double", func(n int) (int, error) { return 2 * n, nil })
	// The fake hub method AskClient invokes the client method it is given
	// and returns the client's result.
	n, err := client.InvokeAs[int](ctx, conn, "AskClient", "double", 21)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n)
	// Output: 42
}

// A server-to-client stream is read with Next and Bind until Next reports
// false; Err then tells whether it completed normally.
func ExampleConn_Stream() {
	srv := newFakeServer()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := client.Dial(ctx, srv.url("/hub"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	st, err := conn.Stream(ctx, "Count", 3)
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	for _, ok := st.Next(ctx); ok; _, ok = st.Next(ctx) {
		var n int
		if err := st.Bind(&n); err != nil {
			log.Fatal(err)
		}
		fmt.Println(n)
	}
	if err := st.Err(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 0
	// 1
	// 2
}
