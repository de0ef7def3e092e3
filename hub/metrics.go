package hub

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubfabric/hubfabric/actors"
	"github.com/hubfabric/hubfabric/internal/metrics"
)

// UnknownMethod is the method label of invocations of a name the hub does
// not have, so clients cannot add label values (hub method names are Go
// exported names: none is spelled like this).
const UnknownMethod = "unknown"

// Invocation outcomes, the outcome label of hubfabric_invocations_total and
// hubfabric_invocation_duration_seconds.
const (
	outcomeOK    = "ok"
	outcomeError = "error"
)

// transportWebSockets is the transport label of WebSocket connections
// (SignalR's name for the transport).
const transportWebSockets = "websockets"

// transportLongPolling and transportServerSentEvents label the
// connections of the HTTP transports.
const (
	transportLongPolling      = "longpolling"
	transportServerSentEvents = "serversentevents"
)

// Buckets of the histograms, in seconds and bytes.
var (
	invocationBuckets = prometheus.ExponentialBuckets(100e-6, 4, 9) // 100 µs .. 6.6 s
	publishBuckets    = prometheus.ExponentialBuckets(100e-6, 4, 8) // 100 µs .. 1.6 s
	queueBuckets      = prometheus.ExponentialBuckets(64, 4, 9)     // 64 B .. 4 MiB
)

// nodeMetrics is what a node with Config.Metrics exports: histograms and
// counters of prometheus children resolved ahead of time, and a collector
// reading the node's atomics at scrape time.
type nodeMetrics struct {
	reg         prometheus.Registerer
	invocations *prometheus.CounterVec
	durations   *prometheus.HistogramVec
	queueBytes  *prometheus.HistogramVec
	publish     prometheus.Histogram
	mailboxes   *metrics.Mailboxes
	collector   *nodeCollector
}

// methodMetrics are one method's children, resolved when its hub is
// registered, so an invocation touches no label map.
type methodMetrics struct {
	ok, failed       prometheus.Counter
	okDur, failedDur prometheus.Observer
}

// observe counts one invocation that began at start.
func (m *methodMetrics) observe(start time.Time, failed bool) {
	d := time.Since(start).Seconds()
	if failed {
		m.failed.Inc()
		m.failedDur.Observe(d)
		return
	}
	m.ok.Inc()
	m.okDur.Observe(d)
}

func newNodeMetrics(n *Node, reg prometheus.Registerer) (*nodeMetrics, error) {
	m := &nodeMetrics{
		reg: reg,
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hubfabric_invocations_total",
			Help: "Hub method invocations that ended, by hub, method (unknown for names the hub lacks) and outcome (ok, error).",
		}, []string{"hub", "method", "outcome"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hubfabric_invocation_duration_seconds",
			Help:    "Time from the start of a hub method invocation to its Completion (a stream's last item), by hub, method and outcome.",
			Buckets: invocationBuckets,
		}, []string{"hub", "method", "outcome"}),
		queueBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hubfabric_outbound_queue_bytes",
			Help:    "Bytes waiting in a connection's outbound queue, sampled each time its writer takes a frame and when it overflows, by hub.",
			Buckets: queueBuckets,
		}, []string{"hub"}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hubfabric_backplane_publish_duration_seconds",
			Help:    "Time one batch publish to the backplane took, failures included.",
			Buckets: publishBuckets,
		}),
		mailboxes: metrics.NewMailboxes(),
	}
	m.collector = &nodeCollector{n: n, mailboxes: m.mailboxes}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.invocations, m.durations, m.queueBytes, m.publish, m.collector} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("hub: Config.Metrics: the registry already has hubfabric metrics (another node?): wrap it with prometheus.WrapRegistererWith to tell nodes apart: %w", err)
			}
			return nil, fmt.Errorf("hub: Config.Metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}

// unregister removes the node's metrics from the registry.
func (m *nodeMetrics) unregister() {
	for _, c := range []prometheus.Collector{m.invocations, m.durations, m.queueBytes, m.publish, m.collector} {
		m.reg.Unregister(c)
	}
}

// forMethod resolves the children of one method of hub.
func (m *nodeMetrics) forMethod(hub, method string) *methodMetrics {
	return &methodMetrics{
		ok:        m.invocations.WithLabelValues(hub, method, outcomeOK),
		failed:    m.invocations.WithLabelValues(hub, method, outcomeError),
		okDur:     m.durations.WithLabelValues(hub, method, outcomeOK),
		failedDur: m.durations.WithLabelValues(hub, method, outcomeError),
	}
}

// instrument resolves everything hub rt counts, at registration.
func (m *nodeMetrics) instrument(rt *hubRuntime) {
	rt.stats = &metrics.Conn{QueueBytes: m.queueBytes.WithLabelValues(rt.name)}
	rt.unknown = m.forMethod(rt.name, UnknownMethod)
	for _, meth := range rt.methods {
		meth.metrics = m.forMethod(rt.name, meth.name)
	}
}

// Descriptions of what nodeCollector reads at scrape time.
var (
	descConnections = prometheus.NewDesc("hubfabric_connections",
		"Open client connections, by hub and transport.", []string{"hub", "transport"}, nil)
	descReceived = prometheus.NewDesc("hubfabric_messages_received_total",
		"Hub protocol messages (Pings included) received from clients, by hub.", []string{"hub"}, nil)
	descSent = prometheus.NewDesc("hubfabric_messages_sent_total",
		"Hub protocol messages written to clients' sockets, by hub.", []string{"hub"}, nil)
	descSlow = prometheus.NewDesc("hubfabric_slow_client_closes_total",
		"Connections closed because more than MaxOutboundBytes waited for them, by hub.", []string{"hub"}, nil)
	descBackplaneUp = prometheus.NewDesc("hubfabric_backplane_up",
		"1 while the node is started and its backplane is up, else 0.", nil, nil)
	descPublished = prometheus.NewDesc("hubfabric_backplane_published_total",
		"Messages handed to the backplane.", nil, nil)
	descPublishErrors = prometheus.NewDesc("hubfabric_backplane_publish_errors_total",
		"Messages whose publish to the backplane failed (their senders got an error).", nil, nil)
	descBPReceived = prometheus.NewDesc("hubfabric_backplane_received_total",
		"Messages received from other nodes through the backplane.", nil, nil)
	descMalformed = prometheus.NewDesc("hubfabric_backplane_malformed_total",
		"Backplane messages dropped because they were not valid envelopes.", nil, nil)
	descGaps = prometheus.NewDesc("hubfabric_backplane_gaps_total",
		"Resubscriptions after a drop of the backplane subscription (messages may have been lost).", nil, nil)
	descDown = prometheus.NewDesc("hubfabric_backplane_down_total",
		"Times the backplane went down.", nil, nil)
	descMailbox = prometheus.NewDesc("hubfabric_actor_mailbox_messages",
		"Messages queued in the mailboxes of the node's actors, summed by kind (hub, group, bridge).", []string{"kind"}, nil)
	descMailboxMax = prometheus.NewDesc("hubfabric_actor_mailbox_max_messages",
		"Messages queued in the deepest mailbox of each actor kind.", []string{"kind"}, nil)
	descActors = prometheus.NewDesc("hubfabric_actors",
		"Live actors of each kind whose mailboxes are tracked (hub, group, bridge).", []string{"kind"}, nil)
	descQueuedBytes = prometheus.NewDesc("hubfabric_outbound_queued_bytes",
		"Bytes waiting in all connections' outbound queues now, by hub.", []string{"hub"}, nil)
	descQueuedRecords = prometheus.NewDesc("hubfabric_outbound_queued_messages",
		"Hub messages waiting in all connections' outbound queues now, by hub.", []string{"hub"}, nil)
	descPendingInvocations = prometheus.NewDesc("hubfabric_pending_invocations",
		"Invocations read from clients that have not started (each waits for its connection's previous call).", nil, nil)
	descReadsPaused = prometheus.NewDesc("hubfabric_reads_paused",
		"Connections whose socket is not read because their pending invocations reached the bound.", nil, nil)
	descPublishQueued = prometheus.NewDesc("hubfabric_backplane_publish_queued",
		"Sends handed to the backplane bridge whose batch publish has not completed.", nil, nil)
)

// nodeCollector reads a node's counters when scraped; it costs nothing
// between scrapes. Safe for concurrent use.
type nodeCollector struct {
	n         *Node
	mailboxes *metrics.Mailboxes
}

// Describe implements prometheus.Collector.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descReceived, descSent, descSlow, descBackplaneUp,
		descPublished, descPublishErrors, descBPReceived, descMalformed, descGaps, descDown,
		descMailbox, descMailboxMax, descActors, descQueuedBytes, descQueuedRecords,
		descPendingInvocations, descReadsPaused, descPublishQueued} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	n.mu.Lock()
	hubs := make([]*hubRuntime, 0, len(n.hubs))
	for _, rt := range n.hubs {
		hubs = append(hubs, rt)
	}
	n.mu.Unlock()
	for _, rt := range hubs {
		st := rt.stats
		ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(st.Connections.Load()), rt.name, transportWebSockets)
		ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(st.LongPolling.Load()), rt.name, transportLongPolling)
		ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(st.ServerSentEvents.Load()), rt.name, transportServerSentEvents)
		ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(st.Received.Load()), rt.name)
		ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(st.Sent.Load()), rt.name)
		ch <- prometheus.MustNewConstMetric(descSlow, prometheus.CounterValue, float64(st.SlowCloses.Load()), rt.name)
		ch <- prometheus.MustNewConstMetric(descQueuedBytes, prometheus.GaugeValue, float64(st.QueuedBytes.Load()), rt.name)
		ch <- prometheus.MustNewConstMetric(descQueuedRecords, prometheus.GaugeValue, float64(st.QueuedRecords.Load()), rt.name)
	}
	up := 0.0
	if ok, _ := n.Ready(); ok {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descBackplaneUp, prometheus.GaugeValue, up)
	s := n.Stats()
	for _, v := range []struct {
		d *prometheus.Desc
		v uint64
	}{
		{descPublished, s.Published}, {descPublishErrors, s.PublishFailed}, {descBPReceived, s.Received},
		{descMalformed, s.Malformed}, {descGaps, s.Gaps}, {descDown, s.Down},
	} {
		ch <- prometheus.MustNewConstMetric(v.d, prometheus.CounterValue, float64(v.v))
	}
	for _, v := range []struct {
		d *prometheus.Desc
		v int64
	}{
		{descPendingInvocations, s.PendingInvocations}, {descReadsPaused, s.ReadsPaused}, {descPublishQueued, s.PublishQueued},
	} {
		ch <- prometheus.MustNewConstMetric(v.d, prometheus.GaugeValue, float64(v.v))
	}
	for _, ms := range c.mailboxes.Snapshot(actors.MailboxHub, actors.MailboxGroup, actors.MailboxBridge) {
		ch <- prometheus.MustNewConstMetric(descMailbox, prometheus.GaugeValue, float64(ms.Messages), ms.Kind)
		ch <- prometheus.MustNewConstMetric(descMailboxMax, prometheus.GaugeValue, float64(ms.Max), ms.Kind)
		ch <- prometheus.MustNewConstMetric(descActors, prometheus.GaugeValue, float64(ms.Actors), ms.Kind)
	}
}
