package transport

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hubfabric/hubfabric/auth"
)

// Relay carries requests of the HTTP transports between nodes, so any
// node serves any request of a long-polling or SSE connection without
// sticky sessions: a request that lands on a node that does not own the
// connection is forwarded to the owner and answered from there. Package
// hub implements it over the backplane. Implementations are safe for
// concurrent use.
type Relay interface {
	// Forward sends req to the connection's owner and returns its answer,
	// waiting up to timeout: to node toNode (a long-polling token's home
	// node, which creates the connection on its first poll), or, when
	// toNode is empty, to the node that owns the connection's channel
	// (see Own). An error means no owner answered.
	Forward(ctx context.Context, toNode string, req RelayRequest, timeout time.Duration) (RelayResponse, error)
	// Own makes the requests forwarded over the channel of connection id
	// of hub reach this node, until release is called.
	Own(ctx context.Context, hub, id string) (release func(), err error)
}

// RelayKind is what a forwarded request asks for.
type RelayKind int

// The kinds of forwarded requests.
const (
	// RelayPoll is a long poll (GET).
	RelayPoll RelayKind = iota + 1
	// RelaySend is a POST of the client's messages.
	RelaySend
	// RelayDelete is a DELETE ending a long-polling connection.
	RelayDelete
)

// RelayRequest is a forwarded request: its connection, the token the
// client sent, the identity the receiving node authenticated, the body of
// a send.
type RelayRequest struct {
	Kind         RelayKind
	Hub          string
	ConnectionID string
	Token        string
	Identity     auth.Identity
	Body         []byte
}

// RelayResponse is the owner's answer: the HTTP status, a poll's body, an
// error status's text.
type RelayResponse struct {
	Status int
	Body   []byte
	Text   string
}

// forwardTimeout bounds the wait for the owner's answer to a forwarded
// send or delete (a send waits while the owner's invocation bounds are
// full); a poll waits for PollTimeout more.
const forwardTimeout = 30 * time.Second

// ServeRelayed serves a request another node forwarded and returns the
// answer; ok is false when this node does not own the connection (then
// the owner, if any, answers). It may wait: a poll up to PollTimeout, a
// send while the hub's bounds are full; ctx ends it.
func (s *Server) ServeRelayed(ctx context.Context, req RelayRequest) (resp RelayResponse, ok bool) {
	if !s.hubs[req.Hub] {
		return RelayResponse{}, false
	}
	h := s.httpConns.get(req.Token)
	if h != nil && h.identity.UserID != req.Identity.UserID {
		return RelayResponse{Status: http.StatusForbidden, Text: "the connection belongs to another user"}, true
	}
	switch req.Kind {
	case RelayPoll:
		if h == nil {
			_, home, err := s.tokens.check(req.Token, req.Identity.UserID)
			if err != nil || home != s.opts.NodeID {
				return RelayResponse{}, false
			}
			if _, status, msg := s.newHTTPConn(ctx, nil, req.Hub, req.Token, transportLongPolling, req.Identity, nil); status != 0 {
				return RelayResponse{Status: status, Text: msg}, true
			}
			return RelayResponse{Status: http.StatusOK}, true
		}
		if h.transport != transportLongPolling {
			return RelayResponse{Status: http.StatusBadRequest, Text: "the connection does not use long polling"}, true
		}
		res := h.longPoll(ctx)
		return RelayResponse{Status: res.status, Body: res.body}, true
	case RelaySend:
		if h == nil {
			return RelayResponse{}, false
		}
		if int64(len(req.Body)) > s.maxSendBody() {
			return RelayResponse{Status: http.StatusRequestEntityTooLarge, Text: "a send body is too large"}, true
		}
		status, text := h.send(ctx, req.Body)
		return RelayResponse{Status: status, Text: text}, true
	case RelayDelete:
		if h == nil {
			return RelayResponse{}, false
		}
		status, text := h.delete()
		return RelayResponse{Status: status, Text: text}, true
	}
	return RelayResponse{}, false
}

// forward sends a request for a connection this node does not have to its
// owner and writes the answer; it reports false when there is no relay
// (one node) or the token is not valid, and the caller answers.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, kind RelayKind, hub, token string, identity auth.Identity, body []byte) bool {
	if s.opts.Relay == nil {
		return false
	}
	connID, home, err := s.tokens.check(token, identity.UserID)
	if err != nil {
		return false
	}
	toNode, timeout := "", forwardTimeout
	if kind == RelayPoll {
		if home == "" || home == s.opts.NodeID {
			return false
		}
		toNode, timeout = home, s.opts.PollTimeout+forwardTimeout
		// A poll outlives the server's read timeout (see servePoll).
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	// A forwarded request ends when the server stops, so shutting down
	// does not wait for another node's poll timeout.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	resp, err := s.opts.Relay.Forward(ctx, toNode, RelayRequest{
		Kind: kind, Hub: hub, ConnectionID: connID, Token: token, Identity: identity, Body: body,
	}, timeout)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			if kind == RelayPoll && r.Context().Err() == nil {
				writePollResult(w, pollResult{status: http.StatusOK}) // stopping: poll again
			}
			return true // the client went away, or the server stops
		}
		s.log.Debug("forwarded request got no answer", "hub", hub, "conn_id", connID, "err", err)
		http.Error(w, msgNoConnection+": "+err.Error(), http.StatusNotFound)
		return true
	}
	switch {
	case kind == RelayPoll:
		writePollResult(w, pollResult{status: resp.Status, body: resp.Body})
	case resp.Status >= 400:
		http.Error(w, resp.Text, resp.Status)
	default:
		w.WriteHeader(resp.Status)
	}
	return true
}
