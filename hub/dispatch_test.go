package hub_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

// gateway has one Go method and takes every other name through Dispatch.
type gateway struct{}

func (gateway) Known(_ *hub.Context) (string, error) { return "go method", nil }

func (gateway) Dispatch(c *hub.Context, inv hub.Invocation) (any, error) {
	switch inv.Target {
	case "fail":
		return nil, hub.Errorf("dispatch refused %s", inv.Target)
	case "boom":
		panic("dispatch panicked")
	case "raw":
		return inv.Arguments[0], nil // a RawValue in the caller's protocol goes back verbatim
	}
	return map[string]any{"target": inv.Target, "args": len(inv.Arguments), "id": inv.ID != "", "conn": c.ConnectionID}, nil
}

// TestDispatcher: a hub implementing hub.Dispatcher takes invocations of
// any method name it has no Go method for, in both protocols; Go methods
// win; errors and panics become error Completions; streaming calls of
// unknown names still fail as "Method does not exist".
func TestDispatcher(t *testing.T) {
	n := startNode(t, hub.Config{}, map[string]any{"gw": gateway{}})
	for _, p := range []string{"json", "messagepack"} {
		t.Run(p, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, n.url+"gw", &client.Options{Protocol: p})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			if s, err := client.InvokeAs[string](ctx, c, "known"); err != nil || s != "go method" {
				t.Fatalf("Known: %q, %v", s, err)
			}
			var got struct {
				Target string `json:"target" msgpack:"target"`
				Args   int    `json:"args" msgpack:"args"`
				ID     bool   `json:"id" msgpack:"id"`
				Conn   string `json:"conn" msgpack:"conn"`
			}
			res, err := c.Invoke(ctx, "AnyName", 1, "two", []int{3})
			if err != nil {
				t.Fatal(err)
			}
			if err := res.Bind(&got); err != nil || got.Target != "AnyName" || got.Args != 3 || !got.ID || got.Conn != c.ConnectionID() {
				t.Fatalf("AnyName: %+v, %v", got, err)
			}
			if r, err := client.InvokeAs[map[string]int](ctx, c, "raw", map[string]int{"x": 7}); err != nil || r["x"] != 7 {
				t.Fatalf("raw: %v, %v", r, err)
			}
			var he *client.HubError
			if _, err := c.Invoke(ctx, "fail"); !errors.As(err, &he) || !strings.Contains(he.Message, "dispatch refused fail") {
				t.Fatalf("fail: %v", err)
			}
			if _, err := c.Invoke(ctx, "boom"); !errors.As(err, &he) || strings.Contains(he.Message, "does not exist") {
				t.Fatalf("boom: %v, want an error Completion", err)
			}
			st, err := c.Stream(ctx, "unknownStream")
			if err != nil {
				t.Fatal(err)
			}
			for {
				if _, ok := st.Next(ctx); !ok {
					break
				}
			}
			if err := st.Err(); err == nil || !strings.Contains(err.Error(), "Method does not exist") {
				t.Fatalf("stream of an unknown name: %v", err)
			}
			// The connection went on through all of that.
			if s, err := client.InvokeAs[string](ctx, c, "known"); err != nil || s != "go method" {
				t.Fatalf("Known after: %q, %v", s, err)
			}
		})
	}
}
