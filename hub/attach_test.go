package hub_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// attachHub joins each connection to group "g" in OnAttached, or refuses
// it; OnConnected and OnDisconnected report.
type attachHub struct {
	refuse       atomic.Bool
	attached     atomic.Int64
	connected    chan string
	disconnected chan string
}

func (h *attachHub) OnAttached(c *hub.Context) error {
	if h.refuse.Load() {
		return errors.New("no room")
	}
	if c.Items != nil {
		return errors.New("Items given to OnAttached")
	}
	if err := c.Groups.Add(c, c.ConnectionID, "g"); err != nil {
		return err
	}
	h.attached.Add(1)
	return nil
}

func (h *attachHub) OnConnected(c *hub.Context) error {
	h.connected <- c.ConnectionID
	return nil
}

func (h *attachHub) OnDisconnected(c *hub.Context, _ error) { h.disconnected <- c.ConnectionID }

// TestAttacher: OnAttached has run (and its group join is in place) when
// the client gets its handshake answer; an OnAttached error is the
// handshake's error, and the connection ends with OnDisconnected.
func TestAttacher(t *testing.T) {
	h := &attachHub{connected: make(chan string, 4), disconnected: make(chan string, 4)}
	n := startNode(t, hub.Config{}, map[string]any{"a": h})
	c, _, err := dialRaw(t, n.url, "a", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protoJSON())
	if got := h.attached.Load(); got != 1 {
		t.Fatalf("OnAttached ran %d times before the handshake answer, want 1", got)
	}
	hc, err := n.node.HubContext("a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hc.Clients.Group("g").Send(ctx, "m", "hi"); err != nil {
		t.Fatal(err)
	}
	if inv, ok := c.next().(*protocol.Invocation); !ok || inv.Target != "m" {
		t.Fatalf("group send after the handshake: got %#v", inv)
	}
	select {
	case <-h.connected:
	case <-time.After(10 * time.Second):
		t.Fatal("OnConnected did not run")
	}

	h.refuse.Store(true)
	r, _, err := dialRaw(t, n.url, "a", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.writeText(string(protocol.AppendHandshakeRequest(nil, protocol.HandshakeRequest{Protocol: "json", Version: 1})))
	if resp := r.handshakeResponse(); !strings.Contains(resp.Error, "Connection refused: no room") {
		t.Fatalf("handshake answer %+v, want the OnAttached error", resp)
	}
	select {
	case <-h.disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("OnDisconnected did not run for the refused connection")
	}
}
