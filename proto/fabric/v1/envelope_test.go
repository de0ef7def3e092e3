package fabricv1_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  *fabricv1.Envelope
	}{
		{
			name: "invocation",
			env: &fabricv1.Envelope{
				OriginNode: "node-a",
				Body: &fabricv1.Envelope_Invocation{Invocation: &fabricv1.Invocation{
					ExcludedConnectionIds: []string{"c1", "c2"},
					Json:                  []byte("{\"type\":1,\"target\":\"send\",\"arguments\":[\"hi\"]}\x1e"),
					Messagepack:           []byte{0x0a, 0x96, 0x01, 0x80, 0xc0, 0xa4, 's', 'e', 'n', 'd', 0x91, 0xa2, 'h', 'i'},
				}},
			},
		},
		{
			name: "group command",
			env: &fabricv1.Envelope{
				OriginNode: "node-b",
				Body: &fabricv1.Envelope_GroupCommand{GroupCommand: &fabricv1.GroupCommand{
					Id:           42,
					Action:       fabricv1.GroupAction_GROUP_ACTION_REMOVE,
					Group:        "room-1",
					ConnectionId: "conn-7",
				}},
			},
		},
		{
			name: "group ack",
			env: &fabricv1.Envelope{
				OriginNode: "node-c",
				Body: &fabricv1.Envelope_GroupAck{GroupAck: &fabricv1.GroupAck{
					Id:    42,
					Error: "no node owns connection conn-7",
				}},
			},
		},
		{
			name: "empty body",
			env:  &fabricv1.Envelope{OriginNode: "node-d"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := proto.Marshal(tt.env)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			var got fabricv1.Envelope
			if err := proto.Unmarshal(b, &got); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !proto.Equal(tt.env, &got) {
				t.Fatalf("round trip changed the envelope:\n got  %v\n want %v", &got, tt.env)
			}
		})
	}
}

func TestGroupActionNames(t *testing.T) {
	t.Parallel()
	for action, want := range map[fabricv1.GroupAction]string{
		fabricv1.GroupAction_GROUP_ACTION_UNSPECIFIED: "GROUP_ACTION_UNSPECIFIED",
		fabricv1.GroupAction_GROUP_ACTION_ADD:         "GROUP_ACTION_ADD",
		fabricv1.GroupAction_GROUP_ACTION_REMOVE:      "GROUP_ACTION_REMOVE",
	} {
		if got := action.String(); got != want {
			t.Errorf("GroupAction(%d).String() = %q, want %q", action, got, want)
		}
	}
}
