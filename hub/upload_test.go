package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// uploadHub reports how an upload stream ended.
type uploadHub struct{}

// Drain reads the stream to its end and says whether the client ended it
// normally or with an error (context.Cause of the call's Context).
func (uploadHub) Drain(c *hub.Context, xs <-chan int) (string, error) {
	n := 0
	for range xs {
		n++
	}
	var he *hub.Error
	if err := context.Cause(c); errors.As(err, &he) {
		return fmt.Sprintf("%d items, then the client failed: %s", n, he.Message), nil
	}
	return fmt.Sprintf("%d items, then a normal end", n), nil
}

// TestUploadStreamErrorIsNotANormalEnd: a client that completes its upload
// stream with an error closes the channel as a normal end does, but the
// method's Context is cancelled with an *Error carrying the client's text.
func TestUploadStreamErrorIsNotANormalEnd(t *testing.T) {
	tn := startNode(t, hub.Config{}, map[string]any{"up": uploadHub{}})
	for _, tc := range []struct {
		name, clientErr, want string
	}{
		{"normal end", "", "2 items, then a normal end"},
		{"client error", "sensor unplugged", "2 items, then the client failed: the client ended the upload stream with an error: sensor unplugged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := dialRaw(t, tn.url, "up", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			c.handshake(protocol.JSON)
			c.send(&protocol.Invocation{InvocationID: "1", Target: "Drain", StreamIDs: []string{"s"}})
			c.send(&protocol.StreamItem{InvocationID: "s", Item: 1})
			c.send(&protocol.StreamItem{InvocationID: "s", Item: 2})
			c.send(&protocol.Completion{InvocationID: "s", Error: tc.clientErr})
			m, ok := c.next().(*protocol.Completion)
			if !ok || m.InvocationID != "1" || m.Error != "" {
				t.Fatalf("completion = %+v", m)
			}
			var got string
			c.bind(m.Result, &got)
			if !strings.EqualFold(got, tc.want) {
				t.Fatalf("Drain = %q, want %q", got, tc.want)
			}
		})
	}
}

// First returns the first item of the stream without reading the rest.
func (uploadHub) First(_ *hub.Context, xs <-chan int) (int, error) {
	for x := range xs {
		return x, nil
	}
	return 0, hub.Errorf("empty stream")
}

// Ping answers "pong".
func (uploadHub) Ping(*hub.Context) string { return "pong" }

// TestUploadMethodReturningEarly: a method that returns before reading its
// upload stream to the end does not wedge the connection: items the client
// keeps sending (more than the stream buffer holds) are dropped and the
// next invocation is answered. (It deadlocked: the upload pump waited for
// the call's context, which ended only after the pump.)
func TestUploadMethodReturningEarly(t *testing.T) {
	tn := startNode(t, hub.Config{StreamBufferCapacity: 2}, map[string]any{"up": uploadHub{}})
	c, _, err := dialRaw(t, tn.url, "up", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	c.send(&protocol.Invocation{InvocationID: "1", Target: "First", StreamIDs: []string{"s"}})
	for i := 1; i <= 20; i++ {
		c.send(&protocol.StreamItem{InvocationID: "s", Item: i})
	}
	c.send(&protocol.Completion{InvocationID: "s"})
	c.send(&protocol.Invocation{InvocationID: "2", Target: "Ping"})
	got := map[string]string{}
	for len(got) < 2 {
		m, ok := c.next().(*protocol.Completion)
		if !ok || m.Error != "" {
			t.Fatalf("completion = %+v", m)
		}
		var v any
		c.bind(m.Result, &v)
		got[m.InvocationID] = fmt.Sprint(v)
	}
	if got["1"] != "1" || got["2"] != "pong" {
		t.Fatalf("completions = %v, want 1: 1 and 2: pong", got)
	}
}
