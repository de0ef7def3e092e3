package transport

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// blockingRelay forwards nothing: Forward reports that it was called and
// waits for its ctx.
type blockingRelay struct{ entered chan RelayRequest }

func (b blockingRelay) Forward(ctx context.Context, _ string, req RelayRequest, _ time.Duration) (RelayResponse, error) {
	b.entered <- req
	<-ctx.Done()
	return RelayResponse{}, ctx.Err()
}

func (blockingRelay) Own(context.Context, string, string) (func(), error) { return func() {}, nil }

// TestStopAcceptingEndsForwardedPolls: a poll for a connection whose home
// is another node is forwarded there; when the server stops, the poll is
// answered empty at once (the client polls again, elsewhere) and Wait
// returns, instead of waiting for the other node's poll timeout.
func TestStopAcceptingEndsForwardedPolls(t *testing.T) {
	t.Parallel()
	relay := blockingRelay{entered: make(chan RelayRequest, 1)}
	hs := newHTTPServer(t, func(o *Options) { o.NodeID, o.Relay = "here", relay })
	other := newTokens(hs.s.opts.TokenSecret, time.Minute, time.Now)
	other.home = "elsewhere"
	tok, _ := other.mint(false, "")
	polled := make(chan int, 1)
	go func() { status, _ := hs.do("GET", "id="+tok, nil); polled <- status }()
	if req := <-relay.entered; req.Kind != RelayPoll || req.Token != tok {
		t.Fatalf("forwarded %+v", req)
	}
	hs.s.StopAccepting()
	if status := <-polled; status != http.StatusOK {
		t.Fatalf("the forwarded poll got %d when the server stopped, want 200 (empty)", status)
	}
}
