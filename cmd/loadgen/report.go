package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// report is the JSON output: the settings, then one object per step
// (fanout) or the idle result.
type report struct {
	Mode      string       `json:"mode"`
	StartedAt time.Time    `json:"started_at"`
	Config    reportConfig `json:"config"`
	ConnectS  float64      `json:"connect_s,omitempty"`
	Steps     []stepResult `json:"steps,omitempty"`
	Idle      *idleResult  `json:"idle,omitempty"`
	Chaos     *chaosResult `json:"chaos,omitempty"`
	Problems  []string     `json:"problems,omitempty"`
}

type reportConfig struct {
	URLs        []string  `json:"urls"`
	Clients     int       `json:"clients"`
	Groups      int       `json:"groups,omitempty"`
	RatesPerS   []float64 `json:"rates_msgs_per_s,omitempty"`
	WarmupS     float64   `json:"warmup_s"`
	DurationS   float64   `json:"duration_s"`
	DrainMaxS   float64   `json:"drain_max_s,omitempty"`
	NodePIDs    []int     `json:"node_pids"`
	RedisPIDs   []int     `json:"redis_pids"`
	Negotiate   bool      `json:"negotiate"`
	Seed        int64     `json:"seed"`
	Quick       bool      `json:"quick"`
	Publisher   string    `json:"publisher,omitempty"`
	LateAfterMs float64   `json:"late_after_ms,omitempty"`
}

func newReport(o options, urls []string, started time.Time) *report {
	r := &report{
		Mode:      o.mode,
		StartedAt: started.UTC(),
		Config: reportConfig{
			URLs: urls, Clients: o.clients, WarmupS: o.warmup.Seconds(), DurationS: o.duration.Seconds(),
			NodePIDs: nonNil(o.pids), RedisPIDs: nonNil(o.redisPIDs), Negotiate: o.negotiate, Seed: o.seed, Quick: o.quick,
		},
	}
	if o.mode == "fanout" || o.mode == "chaos" {
		r.Config.Groups = o.groups
		r.Config.RatesPerS = o.rates
		r.Config.DrainMaxS = o.drain.Seconds()
		r.Config.Publisher = "member 0 of each group (it receives its own messages too)"
		r.Config.LateAfterMs = ms(int64(lateThreshold))
	}
	return r
}

func nonNil(x []int) []int {
	if x == nil {
		return []int{}
	}
	return x
}

func writeJSON(path string, r *report) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(data)
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// markdown renders the results as one Markdown table.
func markdown(r *report) string {
	if r.Chaos != nil {
		return chaosMarkdown(r.Chaos)
	}
	var b strings.Builder
	if r.Idle != nil {
		id := r.Idle
		b.WriteString("| node PID | connections | RSS before MiB | RSS after MiB | KiB per connection |\n")
		b.WriteString("|---:|---:|---:|---:|---:|\n")
		for _, n := range id.Nodes {
			fmt.Fprintf(&b, "| %d | %d | %.1f | %.1f | %.2f |\n", n.PID, n.Connections, mib(n.RSSBeforeBytes), mib(n.RSSAfterBytes), n.BytesPerConn/1024)
		}
		fmt.Fprintf(&b, "| all | %d | | | %.2f |\n", id.Connections, id.NodesBytesPerConn/1024)
		fmt.Fprintf(&b, "\nloadgen: %.1f MiB RSS, %.2f KiB per connection; connect errors %d, disconnects %d, connect time %.1f s\n",
			mib(id.LoadgenRSSBytes), id.LoadgenPerConn/1024, id.ConnectErrors, id.Disconnects, id.ConnectS)
		return b.String()
	}
	b.WriteString("| rate/s | offered/s | delivered/s | lost | dups | reorders | late sends | p50 ms | p99 ms | p99.9 ms | max ms | node CPU s/1M | redis CPU s/1M | node+redis CPU s/1M | loadgen CPU s/1M | node RSS MiB |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Steps {
		rss := make([]string, len(s.NodeRSSBytes))
		for i, v := range s.NodeRSSBytes {
			rss[i] = fmt.Sprintf("%.0f", mib(v))
		}
		fmt.Fprintf(&b, "| %.0f | %.0f | %.0f | %d (%.3g%%) | %d | %d | %d | %.2f | %.2f | %.2f | %.2f | %s | %s | %s | %.2f | %s |\n",
			s.TargetRatePerS, s.OfferedPerS, s.DeliveredPerS, s.LostDeliveries, 100*s.LossRatio, s.Duplicates, s.Reorders, s.LateSends,
			s.LatencyP50Ms, s.LatencyP99Ms, s.LatencyP999Ms, s.LatencyMaxMs,
			cpuCell(s.NodeCPUPer1M, len(s.NodeRSSBytes)), cpuCell(s.RedisCPUPer1M, len(s.RedisRSSBytes)), cpuCell(s.NodeRedisCPUPer1M, len(s.NodeRSSBytes)+len(s.RedisRSSBytes)),
			s.LoadgenCPUPer1M, orDash(strings.Join(rss, " / ")))
	}
	backlogTable(&b, r.Steps)
	for _, s := range r.Steps {
		if s.LostDeliveries > 0 {
			b.WriteString("\nlost: deliveries that had not arrived when the drain window ended; under overload they may be late rather than dropped (a longer --drain tells the two apart).\n")
			break
		}
	}
	return b.String()
}

func cpuCell(v float64, pids int) string {
	if pids == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// quickProblems lists what makes a --quick run fail.
func quickProblems(steps []stepResult) []string {
	var out []string
	for _, s := range steps {
		add := func(what string, n int64) {
			if n != 0 {
				out = append(out, fmt.Sprintf("step %d (%.0f msgs/s): %s %d", s.Step, s.TargetRatePerS, what, n))
			}
		}
		add("lost deliveries", s.LostDeliveries)
		add("duplicates", s.Duplicates)
		add("reorders", s.Reorders)
		add("warm-up lost deliveries", s.WarmupLostDeliveries)
		add("warm-up duplicates", s.WarmupDuplicates)
		add("warm-up reorders", s.WarmupReorders)
		add("send errors", s.SendErrors)
		add("disconnects", s.DisconnectsSoFar)
		add("foreign messages", s.ForeignMessagesSoFar)
		if s.SentMsgs == 0 {
			out = append(out, fmt.Sprintf("step %d: nothing was sent", s.Step))
		}
		if s.firstDisconnect != "" && s.DisconnectsSoFar > 0 {
			out = append(out, "first disconnect: "+s.firstDisconnect)
		}
	}
	return out
}

// backlogTable writes where each node's backlog sat at the end of each
// measured window (nothing when no node served the stage gauges).
func backlogTable(b *strings.Builder, steps []stepResult) {
	header := false
	for _, s := range steps {
		for _, n := range s.Backlog {
			if n.Error != "" {
				continue
			}
			if !header {
				header = true
				b.WriteString("\nBacklog at the end of each measured window (stage gauges of each node's /metrics):\n\n")
				b.WriteString("| rate/s | node | reads paused | pending invocations | hub mailbox | group mailboxes | bridge mailbox | publish queued | outbound queued msgs | outbound queued KiB |\n")
				b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			}
			fmt.Fprintf(b, "| %.0f | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f |\n", s.TargetRatePerS, n.Node,
				n.ReadsPaused, n.PendingInvocations, n.HubMailbox, n.GroupMailboxes, n.BridgeMailbox, n.PublishQueued, n.OutboundMessages, n.OutboundBytes/1024)
		}
	}
}
