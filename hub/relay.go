package hub

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/hubfabric/hubfabric/actors"
	"github.com/hubfabric/hubfabric/auth"
	"github.com/hubfabric/hubfabric/internal/fabric"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/transport"
)

// relay is the node's transport.Relay: HTTP-transport requests for
// connections other nodes own go over the backplane through the bridge
// (actors.ForwardHTTP), and the connection channels of this node's HTTP
// connections are subscribed through it.
type relay struct{ n *Node }

var _ transport.Relay = relay{}

var errNotStarted = errors.New("hub: the node is not started")

func (r relay) bridge() (*fabric.Tree, error) {
	t := r.n.tree.Load()
	if t == nil || t.Bridge == nil {
		return nil, errNotStarted
	}
	return t, nil
}

// Forward implements transport.Relay.
func (r relay) Forward(ctx context.Context, toNode string, req transport.RelayRequest, timeout time.Duration) (transport.RelayResponse, error) {
	t, err := r.bridge()
	if err != nil {
		return transport.RelayResponse{}, err
	}
	m := &fabricv1.HttpRequest{
		Hub: req.Hub, ConnectionId: req.ConnectionID, Token: req.Token, Body: req.Body, UserId: req.Identity.UserID,
	}
	switch req.Kind {
	case transport.RelayPoll:
		m.Kind = fabricv1.HttpRequestKind_HTTP_REQUEST_KIND_POLL
	case transport.RelaySend:
		m.Kind = fabricv1.HttpRequestKind_HTTP_REQUEST_KIND_SEND
	case transport.RelayDelete:
		m.Kind = fabricv1.HttpRequestKind_HTTP_REQUEST_KIND_DELETE
	}
	if len(req.Identity.Claims) > 0 {
		if m.ClaimsJson, err = json.Marshal(req.Identity.Claims); err != nil {
			return transport.RelayResponse{}, err
		}
	}
	resp, err := actors.ForwardHTTP(ctx, r.n.root, t.Bridge, toNode, m, timeout)
	if err != nil {
		return transport.RelayResponse{}, err
	}
	return transport.RelayResponse{Status: int(resp.Status), Body: resp.Body, Text: resp.Text}, nil
}

// Own implements transport.Relay.
func (r relay) Own(_ context.Context, hub, id string) (func(), error) {
	t, err := r.bridge()
	if err != nil {
		return nil, err
	}
	if err := actors.SubscribeConnection(r.n.root, t.Bridge, hub, id, false, r.n.cfg.BackplaneTimeout+answerMargin); err != nil {
		return nil, err
	}
	return func() { _ = actors.SubscribeConnection(r.n.root, t.Bridge, hub, id, true, 0) }, nil
}

// serveForwarded is the bridge's fabric.NodeConfig.ServeHTTP: srv serves a
// request another node forwarded.
func serveForwarded(srv *transport.Server) func(context.Context, *fabricv1.HttpRequest) *fabricv1.HttpResponse {
	return func(ctx context.Context, m *fabricv1.HttpRequest) *fabricv1.HttpResponse {
		req := transport.RelayRequest{
			Hub: m.Hub, ConnectionID: m.ConnectionId, Token: m.Token, Body: m.Body,
			Identity: auth.Identity{UserID: m.UserId},
		}
		switch m.Kind {
		case fabricv1.HttpRequestKind_HTTP_REQUEST_KIND_POLL:
			req.Kind = transport.RelayPoll
		case fabricv1.HttpRequestKind_HTTP_REQUEST_KIND_SEND:
			req.Kind = transport.RelaySend
		case fabricv1.HttpRequestKind_HTTP_REQUEST_KIND_DELETE:
			req.Kind = transport.RelayDelete
		}
		if len(m.ClaimsJson) > 0 {
			if err := json.Unmarshal(m.ClaimsJson, &req.Identity.Claims); err != nil {
				return nil // a broken request: nobody here serves it
			}
		}
		resp, ok := srv.ServeRelayed(ctx, req)
		if !ok {
			return nil
		}
		return &fabricv1.HttpResponse{Status: uint32(resp.Status), Body: resp.Body, Text: resp.Text}
	}
}
