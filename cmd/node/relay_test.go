package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

// startRelay serves the relay hub as "chat" on a test server.
func startRelay(t *testing.T) string {
	t.Helper()
	n, err := hub.New(hub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Register("chat", relay{nodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hubs/", n.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
		srv.Close()
	})
	return srv.URL + "/hubs/chat"
}

// TestCounterRefusesADelayThatOverflows: Counter(1, 10000000000000) made
// time.NewTicker panic ("non-positive interval") in a goroutine of its own,
// which took the whole process down (this test binary with it). It is now
// refused with an error the client sees, and the connection goes on.
func TestCounterRefusesADelayThatOverflows(t *testing.T) {
	url := startRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for _, delay := range []int64{10000000000000, maxCounterDelayMs + 1, -1} {
		st, err := c.Stream(ctx, "Counter", 1, delay)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := st.Next(ctx); ok {
			t.Fatalf("Counter(1, %d) streamed an item", delay)
		}
		var he *client.HubError
		if err := st.Err(); err == nil || !strings.Contains(err.Error(), "0 <= delayMs <= 3600000") {
			t.Fatalf("Counter(1, %d) ended with %v (%T %v), want the bound in the error", delay, err, he, err)
		}
	}
	st, err := c.Stream(ctx, "Counter", 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for {
		if _, ok := st.Next(ctx); !ok {
			break
		}
		var x int
		if err := st.Bind(&x); err != nil {
			t.Fatal(err)
		}
		got = append(got, x)
	}
	if st.Err() != nil || len(got) != 3 || got[0] != 0 || got[2] != 2 {
		t.Fatalf("Counter(3, 1) = %v, %v", got, st.Err())
	}
}
