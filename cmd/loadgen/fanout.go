package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// lateThreshold: a publish sent this long after its scheduled time counts
// as late (the open-loop schedule is kept; late sends go out at once).
const lateThreshold = 10 * time.Millisecond

// fanoutPlace puts client i in group i%groups as member i/groups, on node
// (group+member)%nodes: a group's members alternate nodes, and member 0 (the
// publisher) of consecutive groups sits on different nodes.
func fanoutPlace(i, groups, nodes int) slot {
	g, m := i%groups, i/groups
	return slot{node: (g + m) % nodes, group: g}
}

// stepResult is one rate's measurement. Units are in the names: _s seconds,
// _ms milliseconds, _per_s per second, _bytes bytes.
type stepResult struct {
	Step                   int           `json:"step"`
	TargetRatePerS         float64       `json:"target_rate_msgs_per_s"`
	WarmupS                float64       `json:"warmup_s"`
	DurationS              float64       `json:"duration_s"`
	SentMsgs               int64         `json:"sent_msgs"`
	OfferedPerS            float64       `json:"offered_msgs_per_s"`
	LateSends              int64         `json:"late_sends"`
	SendLagP99Ms           float64       `json:"send_lag_p99_ms"`
	SendErrors             int64         `json:"send_errors"`
	ExpectedDeliveries     int64         `json:"expected_deliveries"`
	UniqueDeliveries       int64         `json:"delivered_unique"`
	DeliveredPerS          float64       `json:"delivered_msgs_per_s"`
	LostDeliveries         int64         `json:"lost_deliveries"`
	LossRatio              float64       `json:"loss_ratio"`
	Duplicates             int64         `json:"duplicates"`
	Reorders               int64         `json:"reorders"`
	WarmupLostDeliveries   int64         `json:"warmup_lost_deliveries"`
	WarmupDuplicates       int64         `json:"warmup_duplicates"`
	WarmupReorders         int64         `json:"warmup_reorders"`
	LatencyP50Ms           float64       `json:"latency_p50_ms"`
	LatencyP99Ms           float64       `json:"latency_p99_ms"`
	LatencyP999Ms          float64       `json:"latency_p999_ms"`
	LatencyMaxMs           float64       `json:"latency_max_ms"`
	WindowDeliveries       int64         `json:"window_deliveries"`
	NodeCPUS               float64       `json:"node_cpu_s"`
	RedisCPUS              float64       `json:"redis_cpu_s"`
	NodeCPUPer1M           float64       `json:"node_cpu_s_per_1m_deliveries"`
	RedisCPUPer1M          float64       `json:"redis_cpu_s_per_1m_deliveries"`
	NodeRedisCPUPer1M      float64       `json:"node_redis_cpu_s_per_1m_deliveries"`
	LoadgenCPUS            float64       `json:"loadgen_cpu_s"`
	LoadgenCPUPer1M        float64       `json:"loadgen_cpu_s_per_1m_deliveries"`
	NodeRSSBytes           []int64       `json:"node_rss_bytes"`
	RedisRSSBytes          []int64       `json:"redis_rss_bytes"`
	LoadgenRSSBytes        int64         `json:"loadgen_rss_bytes"`
	DrainS                 float64       `json:"drain_s"`
	DisconnectsSoFar       int64         `json:"disconnects_so_far"`
	Backlog                []nodeBacklog `json:"backlog_at_window_end"`
	ForeignMessagesSoFar   int64         `json:"foreign_messages_so_far"`
	firstDisconnect        string
	measuredPhase, warmPhs int
}

// fanout is one fanout run over a connected fleet.
type fanout struct {
	o         options
	f         *fleet
	pubs      []*client // per group: its member 0
	sizes     []int64   // per group
	prefixes  [][]byte  // per group: the SendToGroup frame start
	seqs      []uint64  // per group: last sequence number sent
	clients   []*client // all, by id
	nodePIDs  []int
	redisPIDs []int
}

// stepState is shared by one step's publishers, controller and progress.
type stepState struct {
	step         int
	start        time.Time
	measureStart time.Time
	end          time.Time
	perPub       float64 // msgs/s per publisher
	offsets      []int64 // per group, ns
	sent         [][2]atomic.Int64
	sentTotal    atomic.Int64
	late         atomic.Int64
	sendErrs     atomic.Int64
	lag          shardedHist
	measuring    atomic.Bool
}

func runFanout(ctx context.Context, o options, urls []string, progress io.Writer, stderr io.Writer) ([]stepResult, connectResult, error) {
	f := newFleet(o, urls, 2*len(o.rates))
	defer f.close()
	return runFanoutOn(ctx, o, f, progress, stderr)
}

// runFanoutOn runs the fanout workload with fleet f (which the caller
// closes).
func runFanoutOn(ctx context.Context, o options, f *fleet, progress io.Writer, stderr io.Writer) ([]stepResult, connectResult, error) {
	urls := f.urls
	phases := 2 * len(o.rates)
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	groupName := func(g int) string { return "lg-" + runID + "-" + strconv.Itoa(g) }
	if _, err := sampleProcs(append(append([]int(nil), o.pids...), o.redisPIDs...)); err != nil {
		return nil, connectResult{}, fmt.Errorf("--pids/--redis-pids: %w", err)
	}
	cr, byID, err := f.connect(ctx, o.clients, func(i int) slot { return fanoutPlace(i, o.groups, len(urls)) }, groupName, phases, true, progress)
	if err != nil {
		return nil, cr, err
	}
	if cr.firstErr != nil {
		return nil, cr, fmt.Errorf("connecting %d clients: %d failed; first: %w", o.clients, cr.errors, cr.firstErr)
	}
	fmt.Fprintf(stderr, "connected %d clients to %d node(s) in %d groups in %.1fs\n", cr.connected, len(urls), o.groups, cr.seconds)
	fo := &fanout{
		o:         o,
		f:         f,
		pubs:      make([]*client, o.groups),
		sizes:     make([]int64, o.groups),
		prefixes:  make([][]byte, o.groups),
		seqs:      make([]uint64, o.groups),
		clients:   make([]*client, o.clients),
		nodePIDs:  o.pids,
		redisPIDs: o.redisPIDs,
	}
	for i := range o.clients {
		c := byID[i]
		fo.clients[i] = c
		fo.sizes[c.group]++
		if i < o.groups {
			fo.pubs[i] = c
			fo.prefixes[i] = publishFramePrefix(groupName(i))
		}
	}
	var results []stepResult
	for s, rate := range o.rates {
		r, err := fo.step(ctx, s, rate, progress)
		if err != nil {
			return results, cr, err
		}
		results = append(results, r)
		fmt.Fprintf(stderr, "step %d: %.0f msgs/s offered, %.0f delivered/s, lost %d, dups %d, reorders %d, p99 %.2f ms\n",
			s+1, r.OfferedPerS, r.DeliveredPerS, r.LostDeliveries, r.Duplicates, r.Reorders, r.LatencyP99Ms)
	}
	return results, cr, nil
}

// windowSample is taken at the start and end of a measured window.
type windowSample struct {
	at       time.Time
	nodes    procSample
	redis    procSample
	self     float64
	received int64
}

func (fo *fanout) sample() (windowSample, error) {
	s := windowSample{at: time.Now()}
	var err error
	if s.nodes, err = sampleProcs(fo.nodePIDs); err != nil {
		return s, fmt.Errorf("--pids: %w", err)
	}
	if s.redis, err = sampleProcs(fo.redisPIDs); err != nil {
		return s, fmt.Errorf("--redis-pids: %w", err)
	}
	if s.self, err = procCPUSeconds(0); err != nil {
		return s, err
	}
	s.received = fo.received()
	return s, nil
}

func (fo *fanout) received() int64 {
	var n int64
	for _, c := range fo.clients {
		n += c.received.Load()
	}
	return n
}

// phaseTotals sums the clients' counts of one phase.
func (fo *fanout) phaseTotals(phase int) (unique, dups, reorders int64) {
	for _, c := range fo.clients {
		p := &c.phases[phase]
		unique += p.unique.Load()
		dups += p.dups.Load()
		reorders += p.reorders.Load()
	}
	return
}

func (fo *fanout) expected(st *stepState, idx int) int64 {
	var n int64
	for g := range st.sent {
		n += st.sent[g][idx].Load() * fo.sizes[g]
	}
	return n
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// step runs one rate: warm-up, measured window, drain.
func (fo *fanout) step(ctx context.Context, s int, rate float64, progress io.Writer) (stepResult, error) {
	o := fo.o
	G := len(fo.pubs)
	st := &stepState{step: s, perPub: rate / float64(G), offsets: make([]int64, G), sent: make([][2]atomic.Int64, G)}
	st.start = time.Now().Add(100 * time.Millisecond)
	st.measureStart = st.start.Add(o.warmup)
	st.end = st.measureStart.Add(o.duration)
	// Spread the publishers' first sends over one interval, reproducibly.
	rng := rand.New(rand.NewPCG(uint64(o.seed), uint64(s)))
	interval := float64(time.Second) / st.perPub
	for g := range st.offsets {
		st.offsets[g] = int64(rng.Float64() * interval)
	}
	measured, warm := 2*s+1, 2*s

	pctx, cancelPubs := context.WithCancel(ctx)
	defer cancelPubs()
	var pubs sync.WaitGroup
	for g := range G {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			fo.publish(pctx, st, g)
		}()
	}
	stopProgress := make(chan struct{})
	var progressWG sync.WaitGroup
	if progress != nil {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			fo.progressLoop(st, rate, stopProgress, progress)
		}()
	}
	defer func() {
		close(stopProgress)
		progressWG.Wait()
		if progress != nil {
			fmt.Fprint(progress, "\r\033[K")
		}
	}()

	if err := sleepUntil(ctx, st.measureStart); err != nil {
		return stepResult{}, err
	}
	s0, err := fo.sample()
	if err != nil {
		return stepResult{}, err
	}
	st.measuring.Store(true)
	if err := sleepUntil(ctx, st.end); err != nil {
		return stepResult{}, err
	}
	s1, err := fo.sample()
	if err != nil {
		return stepResult{}, err
	}
	backlog := scrapeBacklogs(ctx, o.urls)
	pubs.Wait()

	// Drain: wait for the outstanding deliveries of both phases.
	drainStart := time.Now()
	deadline := drainStart.Add(o.drain)
	expW, expM := fo.expected(st, 0), fo.expected(st, 1)
	for {
		uw, _, _ := fo.phaseTotals(warm)
		um, _, _ := fo.phaseTotals(measured)
		if (uw >= expW && um >= expM) || !time.Now().Before(deadline) {
			break
		}
		if err := sleepUntil(ctx, time.Now().Add(10*time.Millisecond)); err != nil {
			return stepResult{}, err
		}
	}
	drain := time.Since(drainStart)

	r := stepResult{
		Step:               s + 1,
		TargetRatePerS:     rate,
		WarmupS:            o.warmup.Seconds(),
		DurationS:          o.duration.Seconds(),
		LateSends:          st.late.Load(),
		SendErrors:         st.sendErrs.Load(),
		ExpectedDeliveries: expM,
		DrainS:             drain.Seconds(),
		measuredPhase:      measured,
		warmPhs:            warm,
	}
	for g := range st.sent {
		r.SentMsgs += st.sent[g][1].Load()
	}
	window := s1.at.Sub(s0.at).Seconds()
	r.OfferedPerS = float64(r.SentMsgs) / o.duration.Seconds()
	r.SendLagP99Ms = ms(st.lag.snapshot().quantile(0.99))
	var uw, dw, rw int64
	r.UniqueDeliveries, r.Duplicates, r.Reorders = fo.phaseTotals(measured)
	uw, dw, rw = fo.phaseTotals(warm)
	r.LostDeliveries = expM - r.UniqueDeliveries
	if expM > 0 {
		r.LossRatio = float64(r.LostDeliveries) / float64(expM)
	}
	r.WarmupLostDeliveries, r.WarmupDuplicates, r.WarmupReorders = expW-uw, dw, rw
	lat := fo.f.w.lat[measured].snapshot()
	r.LatencyP50Ms = ms(lat.quantile(0.50))
	r.LatencyP99Ms = ms(lat.quantile(0.99))
	r.LatencyP999Ms = ms(lat.quantile(0.999))
	r.LatencyMaxMs = ms(lat.max())
	r.WindowDeliveries = s1.received - s0.received
	r.DeliveredPerS = float64(r.WindowDeliveries) / window
	r.NodeCPUS = cpuDelta(s0.nodes, s1.nodes)
	r.RedisCPUS = cpuDelta(s0.redis, s1.redis)
	r.LoadgenCPUS = s1.self - s0.self
	if r.WindowDeliveries > 0 {
		per := 1e6 / float64(r.WindowDeliveries)
		r.NodeCPUPer1M = r.NodeCPUS * per
		r.RedisCPUPer1M = r.RedisCPUS * per
		r.NodeRedisCPUPer1M = (r.NodeCPUS + r.RedisCPUS) * per
		r.LoadgenCPUPer1M = r.LoadgenCPUS * per
	}
	r.NodeRSSBytes = s1.nodes.rss
	r.RedisRSSBytes = s1.redis.rss
	if rss, err := procRSSBytes(0); err == nil {
		r.LoadgenRSSBytes = rss
	}
	r.DisconnectsSoFar = fo.f.w.disconnects.Load()
	r.Backlog = backlog
	r.ForeignMessagesSoFar = fo.f.w.foreign.Load()
	r.firstDisconnect = fo.f.w.firstDisconnect()
	return r, nil
}

// publish is group g's open-loop publisher for one step: message k is due
// at start+offset+k/perPub whatever happened to earlier sends.
func (fo *fanout) publish(ctx context.Context, st *stepState, g int) {
	c := fo.pubs[g]
	prefix := fo.prefixes[g]
	buf := make([]byte, 0, len(prefix)+64)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	base := st.start.UnixNano() + st.offsets[g]
	end, measure := st.end.UnixNano(), st.measureStart.UnixNano()
	interval := 1e9 / st.perPub
	for k := 0; ; k++ {
		due := base + int64(float64(k)*interval)
		if due >= end {
			return
		}
		if d := time.Duration(due - time.Now().UnixNano()); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		lag := time.Now().UnixNano() - due
		idx := 0
		if due >= measure {
			idx = 1
		}
		fo.seqs[g]++
		buf = append(buf[:0], prefix...)
		buf = appendPayload(buf, payload{phase: 2*st.step + idx, group: g, seq: fo.seqs[g], sentNanos: due})
		buf = append(buf, publishFrameSuffix...)
		if err := c.ws.Write(context.Background(), websocket.MessageText, buf); err != nil {
			st.sendErrs.Add(1)
			return
		}
		st.sent[g][idx].Add(1)
		st.sentTotal.Add(1)
		if lag > int64(lateThreshold) {
			st.late.Add(1)
		}
		st.lag.record(g, lag)
	}
}

// progressLoop rewrites one status line per second.
func (fo *fanout) progressLoop(st *stepState, rate float64, stop <-chan struct{}, w io.Writer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastSent, lastRecv, last := st.sentTotal.Load(), fo.received(), time.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now()
		sent, recv := st.sentTotal.Load(), fo.received()
		dt := now.Sub(last).Seconds()
		phase := "warm-up"
		p99 := ""
		if st.measuring.Load() {
			phase = "measure"
			snap := fo.f.w.lat[2*st.step+1].snapshot()
			p99 = fmt.Sprintf("  p99 %.2fms", ms(snap.quantile(0.99)))
		}
		if now.After(st.end) {
			phase = "drain"
		}
		fmt.Fprintf(w, "\rstep %d/%d %.0f/s %-7s %4.0fs  sent %.0f/s  delivered %.0f/s%s  late %d  disc %d   ",
			st.step+1, len(fo.o.rates), rate, phase, now.Sub(st.start).Seconds(),
			float64(sent-lastSent)/dt, float64(recv-lastRecv)/dt, p99, st.late.Load(), fo.f.w.disconnects.Load())
		lastSent, lastRecv, last = sent, recv, now
	}
}
