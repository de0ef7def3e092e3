package main

import (
	"strings"
	"testing"
)

// TestBacklogParse: the stage gauges are summed over their hub labels,
// the mailbox kinds kept apart, other metrics and comments skipped; a
// page without any stage gauge, or with a bad value, is an error.
func TestBacklogParse(t *testing.T) {
	page := `# HELP hubfabric_reads_paused x
# TYPE hubfabric_reads_paused gauge
hubfabric_reads_paused 100
hubfabric_pending_invocations 12800
hubfabric_backplane_publish_queued 99
hubfabric_outbound_queued_bytes{hub="chat"} 2048
hubfabric_outbound_queued_bytes{hub="other"} 1024
hubfabric_outbound_queued_messages{hub="chat"} 30
hubfabric_actor_mailbox_messages{kind="bridge"} 1
hubfabric_actor_mailbox_messages{kind="group"} 62
hubfabric_actor_mailbox_messages{kind="hub"} 5
hubfabric_actor_mailbox_max_messages{kind="group"} 9
go_goroutines 42
`
	var b nodeBacklog
	if err := b.parse(strings.NewReader(page)); err != nil {
		t.Fatal(err)
	}
	want := nodeBacklog{ReadsPaused: 100, PendingInvocations: 12800, PublishQueued: 99, OutboundBytes: 3072, OutboundMessages: 30,
		BridgeMailbox: 1, GroupMailboxes: 62, HubMailbox: 5}
	if b != want {
		t.Fatalf("parsed %+v, want %+v", b, want)
	}
	for _, bad := range []string{"go_goroutines 42\n", "hubfabric_reads_paused many\n", ""} {
		var b nodeBacklog
		if err := b.parse(strings.NewReader(bad)); err == nil {
			t.Errorf("parse(%q) = %+v, want an error", bad, b)
		}
	}
}

// FuzzBacklogParse: whatever a node's /metrics serves, parse returns.
func FuzzBacklogParse(f *testing.F) {
	f.Add("hubfabric_reads_paused 1\nhubfabric_actor_mailbox_messages{kind=\"hub\"} 2\n")
	f.Add("# x\n{ 1\n 2\nhubfabric_pending_invocations NaN\n")
	f.Fuzz(func(t *testing.T, page string) {
		var b nodeBacklog
		_ = b.parse(strings.NewReader(page))
	})
}
