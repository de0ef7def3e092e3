package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// nodeBacklog is where one node's backlog sat at the end of a measured
// window, from the stage gauges its /metrics serves (hubfabric nodes):
// from the clients' unread sockets to the outbound queues.
type nodeBacklog struct {
	Node               string  `json:"node"`
	ReadsPaused        float64 `json:"reads_paused"`
	PendingInvocations float64 `json:"pending_invocations"`
	HubMailbox         float64 `json:"hub_mailbox"`
	GroupMailboxes     float64 `json:"group_mailboxes"`
	BridgeMailbox      float64 `json:"bridge_mailbox"`
	PublishQueued      float64 `json:"backplane_publish_queued"`
	OutboundBytes      float64 `json:"outbound_queued_bytes"`
	OutboundMessages   float64 `json:"outbound_queued_messages"`
	Error              string  `json:"error,omitempty"`
}

// field is the field a gauge fills (gauges are summed over their labels,
// except the mailbox kinds, which fill one field each); nil for any other
// metric.
func (b *nodeBacklog) field(name, labels string) *float64 {
	switch name {
	case "hubfabric_reads_paused":
		return &b.ReadsPaused
	case "hubfabric_pending_invocations":
		return &b.PendingInvocations
	case "hubfabric_backplane_publish_queued":
		return &b.PublishQueued
	case "hubfabric_outbound_queued_bytes":
		return &b.OutboundBytes
	case "hubfabric_outbound_queued_messages":
		return &b.OutboundMessages
	case "hubfabric_actor_mailbox_messages":
		switch {
		case strings.Contains(labels, `kind="hub"`):
			return &b.HubMailbox
		case strings.Contains(labels, `kind="group"`):
			return &b.GroupMailboxes
		case strings.Contains(labels, `kind="bridge"`):
			return &b.BridgeMailbox
		}
	}
	return nil
}

// scrapeBacklogs reads every node's stage gauges (GET /metrics on the hub
// URL's host), each within 2 s; a node that does not answer, or does not
// serve the gauges, gets an Error instead of figures.
func scrapeBacklogs(ctx context.Context, hubURLs []string) []nodeBacklog {
	out := make([]nodeBacklog, len(hubURLs))
	for i, raw := range hubURLs {
		out[i] = scrapeBacklog(ctx, raw)
	}
	return out
}

func scrapeBacklog(ctx context.Context, hubURL string) nodeBacklog {
	u, err := url.Parse(hubURL)
	if err != nil {
		return nodeBacklog{Node: hubURL, Error: err.Error()}
	}
	b := nodeBacklog{Node: u.Host}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/metrics"}).String(), nil)
	if err != nil {
		b.Error = err.Error()
		return b
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Error = err.Error()
		return b
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b.Error = "GET /metrics: " + res.Status
		return b
	}
	if err := b.parse(io.LimitReader(res.Body, 8<<20)); err != nil {
		b.Error = err.Error()
	}
	return b
}

// parse reads Prometheus' text exposition and sums the stage gauges; it
// fails when none of them is there (not a hubfabric node).
func (b *nodeBacklog) parse(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name, labels := line[:sp], ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name, labels = name[:i], name[i:]
		}
		f := b.field(name, labels)
		if f == nil {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			return fmt.Errorf("metrics line %q: %w", line, err)
		}
		*f += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("no hubfabric stage gauges in /metrics")
	}
	return nil
}
