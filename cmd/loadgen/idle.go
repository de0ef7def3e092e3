package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// idleNode is one node's memory growth in the idle mode.
type idleNode struct {
	PID            int     `json:"pid"`
	URL            string  `json:"url,omitempty"`
	Connections    int     `json:"connections"`
	RSSBeforeBytes int64   `json:"rss_before_bytes"`
	RSSAfterBytes  int64   `json:"rss_after_bytes"`
	BytesPerConn   float64 `json:"rss_bytes_per_connection"`
}

// idleResult is the idle mode's measurement. When --pids lists one PID per
// --url (same order), each node's growth is divided by its own
// connections; otherwise every PID's growth by all connections.
type idleResult struct {
	Connections       int        `json:"connections"`
	ConnectErrors     int        `json:"connect_errors"`
	FirstConnectError string     `json:"first_connect_error,omitempty"`
	ConnectS          float64    `json:"connect_s"`
	SettleS           float64    `json:"settle_s"`
	HoldS             float64    `json:"hold_s"`
	Nodes             []idleNode `json:"nodes"`
	NodesBytesPerConn float64    `json:"nodes_rss_bytes_per_connection"`
	LoadgenRSSBytes   int64      `json:"loadgen_rss_bytes"`
	LoadgenPerConn    float64    `json:"loadgen_rss_bytes_per_connection"`
	Disconnects       int64      `json:"disconnects"`
	FirstDisconnect   string     `json:"first_disconnect,omitempty"`
}

func runIdle(ctx context.Context, o options, urls []string, progress io.Writer, stderr io.Writer) (*idleResult, error) {
	before, err := sampleProcs(o.pids)
	if err != nil {
		return nil, fmt.Errorf("--pids: %w", err)
	}
	selfBefore, err := procRSSBytes(0)
	if err != nil {
		return nil, err
	}
	f := newFleet(o, urls, 0)
	defer f.close()
	cr, _, err := f.connect(ctx, o.clients, func(i int) slot { return slot{node: i % len(urls), group: -1} }, nil, 0, false, progress)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "connected %d of %d idle clients in %.1fs (%d errors)\n", cr.connected, o.clients, cr.seconds, cr.errors)
	if err := sleepUntil(ctx, time.Now().Add(o.warmup)); err != nil {
		return nil, err
	}
	holdEnd := time.Now().Add(o.duration)
	for time.Now().Before(holdEnd) {
		if progress != nil {
			fmt.Fprintf(progress, "\rholding %d idle connections, %.0fs left, disconnects %d   ", cr.connected, time.Until(holdEnd).Seconds(), f.w.disconnects.Load())
		}
		if err := sleepUntil(ctx, minTime(holdEnd, time.Now().Add(time.Second))); err != nil {
			return nil, err
		}
	}
	if progress != nil {
		fmt.Fprint(progress, "\r\033[K")
	}
	after, err := sampleProcs(o.pids)
	if err != nil {
		return nil, fmt.Errorf("--pids: %w", err)
	}
	selfAfter, err := procRSSBytes(0)
	if err != nil {
		return nil, err
	}
	res := &idleResult{
		Connections:     cr.connected,
		ConnectErrors:   cr.errors,
		ConnectS:        cr.seconds,
		SettleS:         o.warmup.Seconds(),
		HoldS:           o.duration.Seconds(),
		LoadgenRSSBytes: selfAfter,
		Disconnects:     f.w.disconnects.Load(),
		FirstDisconnect: f.w.firstDisconnect(),
	}
	if cr.firstErr != nil {
		res.FirstConnectError = cr.firstErr.Error()
	}
	perNode := make([]int, len(urls))
	f.mu.Lock()
	for _, c := range f.clients {
		perNode[c.node]++
	}
	f.mu.Unlock()
	aligned := len(o.pids) == len(urls)
	var delta int64
	for i, pid := range o.pids {
		n := idleNode{PID: pid, Connections: cr.connected, RSSBeforeBytes: before.rss[i], RSSAfterBytes: after.rss[i]}
		if aligned {
			n.URL, n.Connections = urls[i], perNode[i]
		}
		if n.Connections > 0 {
			n.BytesPerConn = float64(n.RSSAfterBytes-n.RSSBeforeBytes) / float64(n.Connections)
		}
		delta += n.RSSAfterBytes - n.RSSBeforeBytes
		res.Nodes = append(res.Nodes, n)
	}
	if cr.connected > 0 {
		res.NodesBytesPerConn = float64(delta) / float64(cr.connected)
		res.LoadgenPerConn = float64(selfAfter-selfBefore) / float64(cr.connected)
	}
	return res, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
