package protocol

import (
	"testing"
)

// A typical chat broadcast: a non-blocking invocation with two strings.
var benchInvocation = &Invocation{Target: "ReceiveMessage", Arguments: []any{"alice", "hello, world! this is a typical chat message"}}

func benchEncode(b *testing.B, p HubProtocol) {
	b.ReportAllocs()
	buf := make([]byte, 0, 256)
	for b.Loop() {
		var err error
		if buf, err = p.AppendMessage(buf[:0], benchInvocation); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkJSONEncodeInvocation(b *testing.B)        { benchEncode(b, JSON) }
func BenchmarkMessagePackEncodeInvocation(b *testing.B) { benchEncode(b, MessagePack) }

// The struct case goes through encoding/json or vmihailenco/msgpack.
func benchEncodeStruct(b *testing.B, p HubProtocol) {
	b.ReportAllocs()
	m := &Invocation{Target: "Update", InvocationID: "42", Arguments: []any{person{Name: "bob", Age: 30, Tags: []string{"a", "b"}}}}
	buf := make([]byte, 0, 256)
	for b.Loop() {
		var err error
		if buf, err = p.AppendMessage(buf[:0], m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSONEncodeInvocationStruct(b *testing.B)        { benchEncodeStruct(b, JSON) }
func BenchmarkMessagePackEncodeInvocationStruct(b *testing.B) { benchEncodeStruct(b, MessagePack) }

func benchParse(b *testing.B, p HubProtocol) {
	m := &Invocation{InvocationID: "7", Target: "SendMessage", Arguments: []any{"alice", "hello, world! this is a typical chat message", 42}}
	data, err := p.AppendMessage(nil, m)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		msgs, _, err := p.ParseMessages(data, 1<<15)
		if err != nil || len(msgs) != 1 {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSONParse(b *testing.B)        { benchParse(b, JSON) }
func BenchmarkMessagePackParse(b *testing.B) { benchParse(b, MessagePack) }
