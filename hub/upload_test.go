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
type uploadHub struct {
	// seen gets what Drain saw at the end of its stream.
	seen chan string
}

// Drain reads the stream to its end and says whether the client ended it
// normally or with an error (context.Cause of the call's Context).
func (h uploadHub) Drain(c *hub.Context, xs <-chan int) (string, error) {
	n := 0
	for range xs {
		n++
	}
	saw := fmt.Sprintf("%d items, then a normal end", n)
	var he *hub.Error
	if err := context.Cause(c); errors.As(err, &he) {
		saw = fmt.Sprintf("%d items, then the stream failed: %s", n, he.Message)
	}
	if h.seen != nil {
		h.seen <- saw
	}
	return saw, nil
}

// TestUploadStreamErrorFailsTheCall: a client that completes its upload
// stream with an error (subject.error in JS) closes the channel, cancels
// the method's Context with an *Error carrying the client's text, and
// fails the invocation with that text even though the method returned a
// result; an item that does not fit the parameter type fails it the same
// way, saying which item. Before, both returned the partial result.
func TestUploadStreamErrorFailsTheCall(t *testing.T) {
	seen := make(chan string, 1)
	tn := startNode(t, hub.Config{}, map[string]any{"up": uploadHub{seen: seen}})
	for _, tc := range []struct {
		name      string
		items     []any
		clientErr string
		saw       string
		wantErr   string // "" for a result
	}{
		{"normal end", []any{1, 2}, "", "2 items, then a normal end", ""},
		{"client error", []any{1, 2}, "sensor unplugged", "2 items, then the stream failed: sensor unplugged",
			"An unexpected error occurred invoking 'Drain' on the server. HubException: sensor unplugged"},
		{"wrong type", []any{1, "abc", 2}, "", "1 items, then the stream failed: Stream 's' failed: item 2 does not fit int",
			"An unexpected error occurred invoking 'Drain' on the server. HubException: Stream 's' failed: item 2 does not fit int"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := dialRaw(t, tn.url, "up", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			c.handshake(protocol.JSON)
			c.send(&protocol.Invocation{InvocationID: "1", Target: "Drain", StreamIDs: []string{"s"}})
			for _, x := range tc.items {
				c.send(&protocol.StreamItem{InvocationID: "s", Item: x})
			}
			c.send(&protocol.Completion{InvocationID: "s", Error: tc.clientErr})
			m, ok := c.next().(*protocol.Completion)
			if !ok || m.InvocationID != "1" {
				t.Fatalf("completion = %+v", m)
			}
			if saw := <-seen; !strings.HasPrefix(saw, tc.saw) {
				t.Errorf("Drain saw %q, want %q...", saw, tc.saw)
			}
			if tc.wantErr == "" {
				var got string
				c.bind(m.Result, &got)
				if m.Error != "" || got != tc.saw {
					t.Fatalf("completion %+v, result %q; want result %q", m, got, tc.saw)
				}
				return
			}
			if !strings.HasPrefix(m.Error, tc.wantErr) || m.HasResult {
				t.Fatalf("completion = %+v, want error %q...", m, tc.wantErr)
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
