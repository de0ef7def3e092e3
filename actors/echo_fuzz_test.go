package actors

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
)

// FuzzUnwantedEcho: for any bytes that decode as an envelope, the look at
// the top-level fields (unwantedEcho) drops only what decoding and then
// dropOwn would drop, on a hub route and a node channel, with and without
// a connection moving in; and for an envelope encoded as proto.Marshal
// writes it, exactly that. (Bytes that do not decode are the decoder's to
// report unless they carry the node's own id, FuzzHandleMessageRouting.)
func FuzzUnwantedEcho(f *testing.F) {
	bodies := []*fabricv1.Envelope{
		{Body: &fabricv1.Envelope_Invocation{Invocation: &fabricv1.Invocation{Json: []byte("{}\x1e")}}},
		{Body: &fabricv1.Envelope_HandoverMarker{HandoverMarker: &fabricv1.HandoverMarker{}}},
		{Body: &fabricv1.Envelope_GroupCommand{GroupCommand: &fabricv1.GroupCommand{}}},
		{Body: &fabricv1.Envelope_GroupAck{GroupAck: &fabricv1.GroupAck{}}},
		{Body: &fabricv1.Envelope_ClientResult{ClientResult: &fabricv1.ClientResult{}}},
		{},
	}
	for _, origin := range []string{"n1", "n2", ""} {
		for _, env := range bodies {
			env.OriginNode = origin
			f.Add(marshalEnvelope(f, env))
		}
	}
	// The origin twice (the last wins; a miss is allowed, a wrong drop is
	// not), a body after an unknown field, and two bodies (the last wins).
	f.Add([]byte{0x0a, 0x02, 'n', '1', 0x0a, 0x02, 'n', '2', 0x12, 0x00})
	f.Add([]byte{0x0a, 0x02, 'n', '2', 0x0a, 0x02, 'n', '1', 0x12, 0x00})
	f.Add([]byte{0x0a, 0x02, 'n', '1', 0xf8, 0x07, 0x01, 0x12, 0x00})
	f.Add([]byte{0x0a, 0x02, 'n', '1', 0xd2, 0x01, 0x00, 0x12, 0x00})
	f.Add([]byte{0x0a, 0x02, 'n', '1', 0x12, 0x00, 0xd2, 0x01, 0x00})
	// Known fields with another wire type, which decoding keeps as unknown
	// fields: a marker and then field 2 as a varint (the marker stays the
	// body), then as a group, and the origin as a varint.
	f.Add([]byte{0x0a, 0x02, 'n', '1', 0xd2, 0x01, 0x00, 0x10, 0x00})
	f.Add([]byte{0x0a, 0x02, 'n', '1', 0xd2, 0x01, 0x00, 0x13, 0x14})
	f.Add([]byte{0x08, 0x01, 0x0a, 0x02, 'n', '1', 0x12, 0x00})
	moving := &echoCounter{}
	moving.Add(1)
	h := &backplaneHandler{nodeID: "n1", echoes: map[string]*echoCounter{"chat": {}, "moving": moving}}
	f.Fuzz(func(t *testing.T, data []byte) {
		env := &fabricv1.Envelope{}
		if proto.Unmarshal(data, env) != nil {
			return
		}
		canonical, err := proto.MarshalOptions{Deterministic: true}.Marshal(env)
		if err != nil {
			t.Fatalf("re-encoding a decoded envelope: %v", err)
		}
		exact := bytes.Equal(canonical, data)
		for _, hub := range []string{"chat", "moving", "unknown"} {
			for _, isNode := range []bool{false, true} {
				want := env.OriginNode == "n1" && h.dropOwn(hub, isNode, envelopeBodyOf(env))
				if got := h.unwantedEcho(hub, isNode, data); got && !want || exact && got != want {
					t.Fatalf("unwantedEcho(%q, node channel %v, %x) = %v, decoding says %v (origin %q, body %d)",
						hub, isNode, data, got, want, env.OriginNode, envelopeBodyOf(env))
				}
			}
		}
	})
}
