package hub_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// metricsHub has a method of each outcome, a group join, a send and a
// flood for the slow-client close.
type metricsHub struct{ floodHub }

func (metricsHub) Fail(_ *hub.Context, why string) error { return hub.Errorf("%s", why) }

func (metricsHub) Join(c *hub.Context, group string) error {
	return c.Groups.Add(c, c.ConnectionID, group)
}

func (metricsHub) Shout(c *hub.Context, text string) error {
	return c.Clients.Others().Send(c, "shout", text)
}

// gathered is one Gather of a registry, by metric name.
type gathered map[string]*dto.MetricFamily

func gather(t *testing.T, reg *prometheus.Registry) gathered {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	g := gathered{}
	for _, f := range fams {
		g[f.GetName()] = f
	}
	return g
}

// metric returns the series of name whose labels include labels (name=value
// pairs), failing the test when there is none.
func (g gathered) metric(t *testing.T, name string, labels ...string) *dto.Metric {
	t.Helper()
	f, ok := g[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	t.Fatalf("metric %s%v missing", name, labels)
	return nil
}

// value is a counter's or a gauge's value.
func (g gathered) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := g.metric(t, name, labels...)
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func (g gathered) want(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	if got := g.value(t, name, labels...); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// labelValues returns the values label takes in metric name.
func (g gathered) labelValues(name, label string) []string {
	var out []string
	for _, m := range g[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && !slices.Contains(out, lp.GetValue()) {
				out = append(out, lp.GetValue())
			}
		}
	}
	slices.Sort(out)
	return out
}

// metricsConfig has no Pings during a test, so message counts are exact.
func metricsConfig(reg prometheus.Registerer) hub.Config {
	return hub.Config{Metrics: reg, MaxOutboundBytes: 64 << 10, KeepAliveInterval: time.Hour, ClientTimeout: 2 * time.Hour}
}

func mInvoke(t *testing.T, c *rawConn, id, target string, args ...any) *protocol.Completion {
	t.Helper()
	c.send(&protocol.Invocation{InvocationID: id, Target: target, Arguments: args})
	comp, ok := c.next().(*protocol.Completion)
	if !ok || comp.InvocationID != id {
		t.Fatalf("%s: got %#v, want its Completion", target, comp)
	}
	return comp
}

func TestMetricsCountWhatTheNodeDoes(t *testing.T) {
	reg := prometheus.NewRegistry()
	tn := startNode(t, metricsConfig(reg), map[string]any{"chat": metricsHub{}})
	a := mDial(t, tn)
	b := mDial(t, tn)
	// Each client's first round trip proves its reader runs, so it is
	// counted as connected.
	if c := mInvoke(t, a, "1", "Echo", "hi"); c.Error != "" {
		t.Fatal(c.Error)
	}
	if c := mInvoke(t, b, "1", "Echo", "hi"); c.Error != "" {
		t.Fatal(c.Error)
	}
	if c := mInvoke(t, a, "2", "Fail", "no"); !strings.Contains(c.Error, "no") {
		t.Fatalf("Fail: %+v", c)
	}
	if c := mInvoke(t, a, "3", "NoSuchMethod"); c.Error == "" {
		t.Fatal("an unknown method succeeded")
	}
	if c := mInvoke(t, a, "4", "Join", "room"); c.Error != "" {
		t.Fatal(c.Error)
	}
	if c := mInvoke(t, a, "5", "Shout", "hey"); c.Error != "" {
		t.Fatal(c.Error)
	}
	if inv, ok := b.next().(*protocol.Invocation); !ok || inv.Target != "shout" {
		t.Fatalf("b got %#v, want the shout", inv)
	}
	// A call is counted after its Completion went out; a client's next
	// call starts only once the previous one returned (one at a time, by
	// default), so one more round trip each proves every call above was
	// counted. Join is not among the counts checked.
	if c := mInvoke(t, a, "6", "Join", "room"); c.Error != "" {
		t.Fatal(c.Error)
	}
	if c := mInvoke(t, b, "2", "Join", "room"); c.Error != "" {
		t.Fatal(c.Error)
	}

	g := gather(t, reg)
	g.want(t, 2, "hubfabric_connections", "hub", "chat", "transport", "websockets")
	g.want(t, 2, "hubfabric_invocations_total", "hub", "chat", "method", "Echo", "outcome", "ok")
	g.want(t, 1, "hubfabric_invocations_total", "hub", "chat", "method", "Fail", "outcome", "error")
	g.want(t, 0, "hubfabric_invocations_total", "hub", "chat", "method", "Fail", "outcome", "ok")
	g.want(t, 1, "hubfabric_invocations_total", "hub", "chat", "method", hub.UnknownMethod, "outcome", "error")
	g.want(t, 1, "hubfabric_invocations_total", "hub", "chat", "method", "Shout", "outcome", "ok")
	if h := g.metric(t, "hubfabric_invocation_duration_seconds", "hub", "chat", "method", "Echo", "outcome", "ok").GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() <= 0 {
		t.Errorf("Echo duration histogram: count %d sum %v, want 2 samples > 0", h.GetSampleCount(), h.GetSampleSum())
	}
	// a sent 6 invocations, b 2; a got the handshake answer and 6
	// Completions, b the answer, 2 Completions and the shout.
	g.want(t, 8, "hubfabric_messages_received_total", "hub", "chat")
	g.want(t, 7+4, "hubfabric_messages_sent_total", "hub", "chat")
	g.want(t, 0, "hubfabric_slow_client_closes_total", "hub", "chat")
	g.want(t, 1, "hubfabric_backplane_up")
	g.want(t, 0, "hubfabric_backplane_gaps_total")
	g.want(t, 0, "hubfabric_backplane_publish_errors_total")
	g.want(t, 1, "hubfabric_actors", "kind", "hub")
	g.want(t, 1, "hubfabric_actors", "kind", "bridge")
	g.want(t, 1, "hubfabric_actors", "kind", "group")
	for _, kind := range []string{"hub", "group", "bridge"} {
		g.metric(t, "hubfabric_actor_mailbox_messages", "kind", kind)
		g.metric(t, "hubfabric_actor_mailbox_max_messages", "kind", kind)
	}
	published := g.value(t, "hubfabric_backplane_published_total")
	if n := g.metric(t, "hubfabric_backplane_publish_duration_seconds").GetHistogram().GetSampleCount(); (n > 0) != (published > 0) {
		t.Errorf("publish histogram has %d samples for %v messages published", n, published)
	}
	if h := g.metric(t, "hubfabric_outbound_queue_bytes", "hub", "chat").GetHistogram(); h.GetSampleCount() == 0 {
		t.Error("no outbound queue samples")
	}

	// A client that asks for 64 MiB and does not read is closed as too slow.
	slow := mDial(t, tn)
	slow.send(&protocol.Invocation{Target: "flood", Arguments: []any{4096, 16 << 10}})
	if cl := slow.expectClose(); !strings.Contains(cl.Error, "too slow") {
		t.Fatalf("slow client Close = %+v", cl)
	}
	g = gather(t, reg)
	g.want(t, 1, "hubfabric_slow_client_closes_total", "hub", "chat")
	// Every call has completed and was read: no stage holds a backlog.
	g.want(t, 0, "hubfabric_pending_invocations")
	g.want(t, 0, "hubfabric_reads_paused")
	g.want(t, 0, "hubfabric_backplane_publish_queued")
	g.metric(t, "hubfabric_outbound_queued_bytes", "hub", "chat")
	g.metric(t, "hubfabric_outbound_queued_messages", "hub", "chat")
	h := g.metric(t, "hubfabric_outbound_queue_bytes", "hub", "chat").GetHistogram()
	big := uint64(0)
	for _, bk := range h.GetBucket() {
		if bk.GetUpperBound() == 16<<10 {
			big = h.GetSampleCount() - bk.GetCumulativeCount()
		}
	}
	if big == 0 {
		t.Errorf("no queue sample above 16 KiB after an overflow of 16 KiB records: %v", h)
	}

	// The same through the text exposition cmd/node serves.
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, line := range []string{
		`hubfabric_invocations_total{hub="chat",method="Echo",outcome="ok"} 2`,
		`hubfabric_slow_client_closes_total{hub="chat"} 1`,
		`hubfabric_backplane_up 1`,
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

// mDial connects a JSON client that completed its handshake.
func mDial(t *testing.T, tn *testNode) *rawConn {
	t.Helper()
	c, _, err := dialRaw(t, tn.url, "chat", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.handshake(protocol.JSON)
	return c
}

func TestMetricsMethodLabelIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	tn := startNode(t, metricsConfig(reg), map[string]any{"chat": metricsHub{}})
	c := mDial(t, tn)
	mInvoke(t, c, "0", "echo", "lower case finds Echo")
	for i := range 50 {
		mInvoke(t, c, fmt.Sprint(i+1), fmt.Sprintf("Made-Up-%d", i))
	}
	g := gather(t, reg)
	want := []string{"Echo", "Fail", "Flood", "Join", "Shout", hub.UnknownMethod}
	slices.Sort(want)
	for _, name := range []string{"hubfabric_invocations_total", "hubfabric_invocation_duration_seconds"} {
		if got := g.labelValues(name, "method"); !slices.Equal(got, want) {
			t.Errorf("%s method labels = %v, want only the hub's methods and %q: %v", name, got, hub.UnknownMethod, want)
		}
	}
	g.want(t, 50, "hubfabric_invocations_total", "method", hub.UnknownMethod, "outcome", "error")
	g.want(t, 1, "hubfabric_invocations_total", "method", "Echo", "outcome", "ok")
}

func TestMetricsRegistryHoldsOneNodeAndIsFreedOnShutdown(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	n, err := hub.New(hub.Config{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hub.New(hub.Config{Metrics: reg}); err == nil || !strings.Contains(err.Error(), "WrapRegistererWith") {
		t.Fatalf("a second node on the same registry: err = %v, want the registration refused", err)
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if g := gather(t, reg); len(g) != 0 {
		t.Fatalf("after Shutdown the registry still has %d families", len(g))
	}
	// Wrapped with a node label, two nodes share one registry (a new one:
	// a registry remembers the label names a metric had).
	reg = prometheus.NewRegistry()
	var nodes []*hub.Node
	for _, id := range []string{"a", "b"} {
		n, err := hub.New(hub.Config{Metrics: prometheus.WrapRegistererWith(prometheus.Labels{"node": id}, reg)})
		if err != nil {
			t.Fatalf("node %s: %v", id, err)
		}
		if err := n.Register("chat", metricsHub{}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	g := gather(t, reg)
	g.want(t, 0, "hubfabric_connections", "node", "a", "hub", "chat")
	g.want(t, 0, "hubfabric_connections", "node", "b", "hub", "chat")
	for _, n := range nodes {
		if err := n.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if g := gather(t, reg); len(g) != 0 {
		t.Fatalf("after Shutdown the registry still has %d families", len(g))
	}
}

// benchMetrics runs the benchmarks on a node with metrics, to compare with
// and without: go test ./hub -run '^$' -bench . -bench.metrics
var benchMetrics = flag.Bool("bench.metrics", false, "benchmarks register the node's metrics on a registry")

// benchConfig is cfg with Metrics set when -bench.metrics is.
func benchConfig(cfg hub.Config) hub.Config {
	if *benchMetrics {
		cfg.Metrics = prometheus.NewRegistry()
	}
	return cfg
}
