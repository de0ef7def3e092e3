package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/hub"
)

// quickHub is the part of cmd/node's relay hub that the fanout workload
// calls, for --quick runs without --url.
type quickHub struct{}

// JoinGroup adds the caller to group.
func (quickHub) JoinGroup(c *hub.Context, group string) error {
	return c.Groups.Add(c, c.ConnectionID, group)
}

// SendToGroup invokes target(args...) on the members of group.
func (quickHub) SendToGroup(c *hub.Context, group, target string, args ...any) error {
	return c.Clients.Group(group).Send(c, target, args...)
}

// quickCluster is n in-process nodes on one in-memory bus, each behind its
// own loopback HTTP server, so group messages cross nodes as they would
// through Redis.
type quickCluster struct {
	nodes []*hub.Node
	srvs  []*http.Server
	urls  []string
	done  []chan error
}

func startQuickCluster(ctx context.Context, n int) (*quickCluster, error) {
	bus := backplane.NewMemoryBus()
	qc := &quickCluster{}
	for i := range n {
		node, err := hub.New(hub.Config{
			NodeID:      fmt.Sprintf("quick-%d", i),
			Backplane:   bus.NewBackplane(),
			TokenSecret: []byte("loadgen quick cluster"),
		})
		if err != nil {
			qc.stop()
			return nil, err
		}
		if err := node.Register("loadgen", quickHub{}); err != nil {
			qc.stop()
			return nil, err
		}
		if err := node.Start(ctx); err != nil {
			_ = node.Shutdown(context.Background())
			qc.stop()
			return nil, err
		}
		qc.nodes = append(qc.nodes, node)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			qc.stop()
			return nil, err
		}
		mux := http.NewServeMux()
		mux.Handle("/hubs/", node.Handler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		qc.srvs = append(qc.srvs, srv)
		qc.done = append(qc.done, done)
		qc.urls = append(qc.urls, "http://"+ln.Addr().String()+"/hubs/loadgen")
	}
	return qc, nil
}

// stop shuts the nodes down (closing their WebSockets), then the servers.
func (qc *quickCluster) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var errs []error
	for _, n := range qc.nodes {
		errs = append(errs, n.Shutdown(ctx))
	}
	for i, s := range qc.srvs {
		errs = append(errs, s.Shutdown(ctx))
		if err := <-qc.done[i]; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
