package actors

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hubfabric/hubfabric/backplane"
	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
	"github.com/hubfabric/hubfabric/protocol"
)

// FuzzHandleMessageRouting: a message on channel X reaches only the
// recipients of X. Connections a (user ua, group ga) and b (user ub, group
// gb) listen; any channel carries either a well-formed send from another
// node (valid, excluding the connection named excluded) or any bytes.
// A record reaches a connection only if the channel names it (all, its
// id, its user, its group) and, for all and groups, it is not excluded; a
// well-formed send on such a channel does reach it; and every message is
// either decoded (Counters.Received) or dropped and counted
// (Counters.Malformed), never lost silently.
func FuzzHandleMessageRouting(f *testing.F) {
	for _, ch := range []string{"h:chat:all", "h:chat:c:a", "h:chat:c:b", "h:chat:g:ga", "h:chat:g:gb", "h:chat:u:ua", "h:chat:u:ub",
		"h:chat:c:", "h:chat:g:", "h:chat:u:a", "h:chat:c:ua", "h:other:all", "h:chat:all:", "n:n1", "h:chat:x:a", "h::all"} {
		f.Add(ch, []byte(nil), "", true)
		f.Add(ch, []byte(nil), "a", true)
		f.Add(ch, invocationEnvelope(f, "other", "m", "b"), "", false)
	}
	f.Add("h:chat:c:a", []byte{0x0a, 0x02, 'n', '1'}, "", false) // from this node itself
	n := startNode(f, newTestSystem(f), "n1", backplane.NewMemory(), nil)
	a, b := n.connect("a", "ua", protocol.JSON), n.connect("b", "ub", protocol.MessagePack)
	n.mustGroup(GroupAdd, "a", "ga")
	n.mustGroup(GroupAdd, "b", "gb")
	type listener struct {
		c           *testConn
		user, group string
		marker      string // sent on its group's channel: the longest path, so it arrives after the input
	}
	ls := []listener{{a, "ua", "ga", "markerA"}, {b, "ub", "gb", "markerB"}}
	f.Fuzz(func(t *testing.T, channel string, raw []byte, excluded string, valid bool) {
		data := raw
		if valid {
			data = invocationEnvelope(t, "other", "m", strings.ToValidUTF8(excluded, "")) // proto strings are UTF-8
		}
		env := &fabricv1.Envelope{}
		decodes := proto.Unmarshal(data, env) == nil
		if decodes && env.GetGroupCommand() != nil {
			return // a remote join or leave legitimately changes who listens where
		}
		received, malformed := n.cfg.Counters.Received.Load(), n.cfg.Counters.Malformed.Load()
		n.tree.Handler.HandleMessage(channel, data)
		hub, _, isNode, parses := parseChannel(channel)
		if (decodes && env.OriginNode == "n1") || parses && n.tree.Handler.(*backplaneHandler).unwantedEcho(hub, isNode, data) {
			// Its own message, come back: ignored, neither received nor
			// malformed (FuzzUnwantedEcho checks the second test).
		} else if n.cfg.Counters.Received.Load() == received && n.cfg.Counters.Malformed.Load() == malformed {
			t.Fatalf("message on %q (%d bytes) neither received nor counted as malformed", channel, len(data))
		}
		for _, l := range ls {
			n.tree.Handler.HandleMessage("h:chat:g:"+l.group, invocationEnvelope(t, "other", l.marker))
			out := l.c.out
			want := record(t, out.protocol, l.marker)
			recs := out.waitRecords(t, 1)
			for ; !bytes.Equal(recs[len(recs)-1], want); recs = out.recordsNow() {
				out.waitRecords(t, len(recs)+1)
			}
			out.update(func() { out.records = nil })
			got := recs[:len(recs)-1]
			var exclusions []string
			if inv := env.GetInvocation(); decodes && inv != nil {
				exclusions = inv.ExcludedConnectionIds
			}
			excludedHere := slices.Contains(exclusions, l.c.id)
			named := channel == "h:chat:c:"+l.c.id || channel == "h:chat:u:"+l.user ||
				((channel == "h:chat:all" || channel == "h:chat:g:"+l.group) && !excludedHere)
			if len(got) > 0 && !named {
				t.Fatalf("%s (user %s, group %s) got %q from a message on %q (excluded %q): not its channel", l.c.id, l.user, l.group, got, channel, exclusions)
			}
			if valid && named && (len(got) != 1 || !bytes.Equal(got[0], record(t, out.protocol, "m"))) {
				t.Fatalf("%s got %q from a well-formed send on %q (excluded %q), want the one record", l.c.id, got, channel, exclusions)
			}
		}
	})
}
