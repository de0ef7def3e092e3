package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// hx decodes a hex string with optional spaces.
func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// frame prefixes body with its VarInt length.
func frame(body []byte) []byte {
	var out []byte
	n := len(body)
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			out = append(out, b|0x80)
			continue
		}
		out = append(out, b)
		break
	}
	return append(out, body...)
}

func TestMessagePackProtocolIdentity(t *testing.T) {
	t.Parallel()
	if MessagePack.Name() != "messagepack" || MessagePack.Version() != 2 || MessagePack.TransferFormat() != TransferBinary {
		t.Fatalf("got %s/%d/%v", MessagePack.Name(), MessagePack.Version(), MessagePack.TransferFormat())
	}
}

func TestMessagePackEncodeExact(t *testing.T) {
	t.Parallel()
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	tsBytes, _ := msgpack.Marshal(ts)
	tests := []struct {
		name string
		msg  Message
		want []byte
	}{
		{"ping", &Ping{}, hx("02 91 06")},
		// The 15-byte Invocation of the Redis backplane example (section 7.2).
		{"invocation spec example", &Invocation{Target: "Hello", Arguments: []any{"hi"}},
			append(append(hx("0f 96 01 80 c0 a5"), "Hello"...), append(hx("91 a2"), "hi\x90"...)...)},
		{"invocation id headers stream ids", &Invocation{Headers: map[string]string{"k": "v"}, InvocationID: "7", Target: "T", Arguments: []any{}, StreamIDs: []string{"1"}},
			frame(hx("96 01 81 a1 6b a1 76 a1 37 a1 54 90 91 a1 31"))},
		{"invocation values", &Invocation{Target: "T", Arguments: []any{nil, true, false, -1, 200, int64(-200), 1.5, uint64(math.MaxUint64), int32(70000)}},
			frame(hx("96 01 80 c0 a1 54 99 c0 c3 c2 ff cc c8 d1 ff 38 cb 3ff8000000000000 cf ffffffffffffffff ce 00011170 90"))},
		{"invocation reflect values", &Invocation{Target: "T", Arguments: []any{person{Name: "A", Age: 3}, []byte{1, 2}, ts, int16(5), uint8(9), float32(0.5)}},
			frame(append(append(hx("96 01 80 c0 a1 54 96 82 a4 6e616d65 a1 41 a3 616765 03 c4 02 01 02"), tsBytes...), hx("05 09 ca 3f000000 90")...))},
		{"stream invocation", &StreamInvocation{InvocationID: "1", Target: "S", Arguments: []any{RawValue{0x05}}},
			frame(hx("96 04 80 a1 31 a1 53 91 05 90"))},
		{"stream item", &StreamItem{InvocationID: "1"}, frame(hx("94 02 80 a1 31 c0"))},
		{"completion void", &Completion{InvocationID: "1"}, frame(hx("94 03 80 a1 31 02"))},
		{"completion error", &Completion{InvocationID: "1", Error: "boom"}, frame(hx("95 03 80 a1 31 01 a4 626f6f6d"))},
		{"completion nil result", &Completion{InvocationID: "1", HasResult: true}, frame(hx("95 03 80 a1 31 03 c0"))},
		{"completion result", &Completion{InvocationID: "1", HasResult: true, Result: "x"}, frame(hx("95 03 80 a1 31 03 a1 78"))},
		{"cancel", &CancelInvocation{InvocationID: "1"}, frame(hx("93 05 80 a1 31"))},
		{"close", &Close{}, frame(hx("93 07 c0 c2"))},
		{"close error reconnect", &Close{Error: "e", AllowReconnect: true}, frame(hx("93 07 a1 65 c3"))},
		{"ack", &Ack{SequenceID: 5}, frame(hx("92 08 05"))},
		{"sequence", &Sequence{SequenceID: 300}, frame(hx("92 09 cd 01 2c"))},
		{"sequence negative", &Sequence{SequenceID: -33}, frame(hx("92 09 d0 df"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := encode(t, MessagePack, tt.msg)
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("got  % x\nwant % x", got, tt.want)
			}
		})
	}
}

// Our hand-written fast paths must agree with the library's encoding.
func TestMessagePackFastPathsMatchLibrary(t *testing.T) {
	t.Parallel()
	vals := []any{"", strings.Repeat("s", 31), strings.Repeat("s", 32), strings.Repeat("s", 255), strings.Repeat("s", 256), strings.Repeat("s", 65536),
		0, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, -1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, math.MinInt32 - 1, math.MinInt64,
		uint64(math.MaxUint64), 0.1, math.Inf(-1), true, false, nil}
	for _, v := range vals {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		enc.UseCompactInts(true)
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		got, err := appendMPValue(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("%v: got % x want % x", v, got[:min(len(got), 16)], buf.Bytes()[:min(buf.Len(), 16)])
		}
	}
	for _, n := range []int{0, 15, 16, 65535, 65536} {
		var buf bytes.Buffer
		enc := msgpack.NewEncoder(&buf)
		_ = enc.EncodeArrayLen(n)
		_ = enc.EncodeMapLen(n)
		got := appendMPMapLen(appendMPArrayLen(nil, n), n)
		bytesEqual(t, "lens", got, buf.Bytes())
	}
}

func TestMessagePackLongMessagePrefix(t *testing.T) {
	t.Parallel()
	for _, n := range []int{100, 117, 118, 119, 200, 16000, 3 << 20} {
		m := &Invocation{Target: "T", Arguments: []any{strings.Repeat("x", n)}}
		b, err := MessagePack.AppendMessage([]byte("pre"), m)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := msgpack.Marshal([]any{1, map[string]string{}, nil, "T", []any{strings.Repeat("x", n)}, []any{}})
		bytesEqual(t, "framed", b[3:], frame(body))
		bytesEqual(t, "prefix kept", b[:3], []byte("pre"))
		got := parseOne(t, MessagePack, b[3:]).(*Invocation)
		var s string
		if err := MessagePack.Unmarshal(got.Arguments[0].(RawValue), &s); err != nil || len(s) != n {
			t.Fatalf("len %d: %v", len(s), err)
		}
	}
}

func TestMessagePackParseClientMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string // hex
		want Message
	}{
		{"5-item invocation from the JS client", "95 01 80 a1 30 a4 53656e64 91 01",
			&Invocation{InvocationID: "0", Target: "Send", Arguments: []any{int64(1)}}},
		{"5-item non-blocking invocation", "95 01 80 c0 a4 53656e64 92 a1 61 c3",
			&Invocation{Target: "Send", Arguments: []any{"a", true}}},
		{"empty-string id is non-blocking", "95 01 80 a0 a1 41 90", &Invocation{Target: "A", Arguments: []any{}}},
		{"6-item invocation with stream ids", "96 01 80 a1 30 a2 5570 90 92 a1 31 a1 32",
			&Invocation{InvocationID: "0", Target: "Up", Arguments: []any{}, StreamIDs: []string{"1", "2"}}},
		{"nil stream ids", "96 01 80 c0 a1 41 90 c0", &Invocation{Target: "A", Arguments: []any{}}},
		{"extra trailing items ignored", "97 01 80 c0 a1 41 90 90 81 a1 78 93 01 02 03", &Invocation{Target: "A", Arguments: []any{}}},
		{"headers", "95 01 82 a1 61 a1 31 a1 62 a0 c0 a1 41 90", &Invocation{Headers: map[string]string{"a": "1", "b": ""}, Target: "A", Arguments: []any{}}},
		{"map16 headers and array16 args", "95 01 de 0001 a1 61 a1 31 c0 a1 41 dc 0001 07",
			&Invocation{Headers: map[string]string{"a": "1"}, Target: "A", Arguments: []any{int64(7)}}},
		{"str8 target", "95 01 80 c0 d9 01 41 90", &Invocation{Target: "A", Arguments: []any{}}},
		{"5-item stream invocation", "95 04 80 a1 31 a1 43 92 0a cd 01f4",
			&StreamInvocation{InvocationID: "1", Target: "C", Arguments: []any{int64(10), int64(500)}}},
		{"stream item", "94 02 80 a1 30 81 a1 61 01", &StreamItem{InvocationID: "0", Item: map[string]any{"a": int64(1)}}},
		{"stream item nil", "94 02 80 a1 30 c0", &StreamItem{InvocationID: "0"}},
		{"completion void", "94 03 80 a1 30 02", &Completion{InvocationID: "0"}},
		{"completion void with extra item", "95 03 80 a1 30 02 c0", &Completion{InvocationID: "0"}},
		{"completion error", "95 03 80 a1 30 01 a3 626164", &Completion{InvocationID: "0", Error: "bad"}},
		{"completion nil error", "95 03 80 a1 30 01 c0", &Completion{InvocationID: "0"}},
		{"completion result", "95 03 80 a1 30 03 cb 3ff8000000000000", &Completion{InvocationID: "0", HasResult: true, Result: 1.5}},
		{"completion nil result", "95 03 80 a1 30 03 c0", &Completion{InvocationID: "0", HasResult: true}},
		{"cancel", "93 05 80 a1 31", &CancelInvocation{InvocationID: "1"}},
		{"ping", "91 06", &Ping{}},
		{"ping with extra", "92 06 c0", &Ping{}},
		{"close from the JS client", "92 07 c0", &Close{}},
		{"close 3 items", "93 07 a1 65 c3", &Close{Error: "e", AllowReconnect: true}},
		{"close nil allowReconnect", "93 07 c0 c0", &Close{}},
		{"ack", "92 08 05", &Ack{SequenceID: 5}},
		{"ack uint64", "92 08 cf 00000000 00000100", &Ack{SequenceID: 256}},
		{"sequence int8", "92 09 d0 fe", &Sequence{SequenceID: -2}},
		{"array16 envelope", "dc 0002 09 d3 7fffffffffffffff", &Sequence{SequenceID: math.MaxInt64}},
		{"uint8 type", "92 cc 08 01", &Ack{SequenceID: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := decodeValues(t, MessagePack, parseOne(t, MessagePack, frame(hx(tt.body))))
			deepEqual(t, "message", got, tt.want)
		})
	}
}

func TestMessagePackRawValuesAreCopies(t *testing.T) {
	t.Parallel()
	in := frame(hx("95 01 80 c0 a1 41 92 81 a1 78 01 92 01 02"))
	m := parseOne(t, MessagePack, in).(*Invocation)
	a0 := m.Arguments[0].(RawValue)
	bytesEqual(t, "arg0", a0, hx("81 a1 78 01"))
	bytesEqual(t, "arg1", m.Arguments[1].(RawValue), hx("92 01 02"))
	for i := range in {
		in[i] = 0
	}
	bytesEqual(t, "arg0 after input reuse", a0, hx("81 a1 78 01"))
	if cap(a0) != len(a0) {
		t.Fatal("RawValue has spare capacity")
	}
}

func TestMessagePackRoundTrip(t *testing.T) {
	t.Parallel()
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	msgs := []Message{
		&Invocation{Target: "Send", Arguments: []any{int64(1), "two", nil, true, 2.5, []any{int64(-1), "x"}, map[string]any{"k": map[string]any{"n": int64(-300)}}, []byte{0, 1}, ts}},
		&Invocation{Headers: map[string]string{"h": "v"}, InvocationID: "12", Target: "T", Arguments: []any{}, StreamIDs: []string{"3", "4"}},
		&StreamInvocation{InvocationID: "1", Target: "S", Arguments: []any{"x"}, StreamIDs: []string{"9"}},
		&StreamItem{Headers: map[string]string{"a": "b"}, InvocationID: "1", Item: nil},
		&StreamItem{InvocationID: "1", Item: map[string]any{"a": []any{}}},
		&Completion{InvocationID: "1"},
		&Completion{InvocationID: "1", HasResult: true},
		&Completion{InvocationID: "1", HasResult: true, Result: "r"},
		&Completion{InvocationID: "1", Error: "e"},
		&CancelInvocation{InvocationID: "1"},
		&CancelInvocation{Headers: map[string]string{"x": "y"}, InvocationID: "2"},
		&Ping{},
		&Close{},
		&Close{Error: "err", AllowReconnect: true},
		&Ack{SequenceID: 0},
		&Ack{SequenceID: math.MaxInt64},
		&Sequence{SequenceID: math.MinInt64},
	}
	var all []byte
	for _, m := range msgs {
		b := encode(t, MessagePack, m)
		got := decodeValues(t, MessagePack, parseOne(t, MessagePack, b))
		deepEqual(t, "round trip", got, m)
		all = append(all, b...)
	}
	got, n, err := MessagePack.ParseMessages(all, 1<<10)
	if err != nil || n != len(all) || len(got) != len(msgs) {
		t.Fatalf("multi: %d msgs, consumed %d/%d, %v", len(got), n, len(all), err)
	}
	for i := range got {
		deepEqual(t, "multi", decodeValues(t, MessagePack, got[i]), msgs[i])
	}
}

func TestMessagePackFraming(t *testing.T) {
	t.Parallel()
	ping := "029106"
	big := frame(make([]byte, 200)) // 2-byte prefix c8 01
	tests := []struct {
		name     string
		in       []byte
		max      int
		msgs     int
		consumed int
		err      error
		errText  string
	}{
		{"empty input", nil, 100, 0, 0, nil, ""},
		{"one", hx(ping), 100, 1, 3, nil, ""},
		{"three", hx(ping + ping + ping), 100, 3, 9, nil, ""},
		{"partial body", hx(ping + ping + "0291"), 100, 2, 6, nil, ""},
		{"partial prefix", hx(ping + "80"), 100, 1, 3, nil, ""},
		{"partial 4-byte prefix", hx(ping + "ffffff"), 0, 1, 3, nil, ""},
		{"partial long body under limit", big[:100], 200, 0, 0, nil, ""},
		{"long body over limit while partial", big[:100], 199, 0, 0, ErrMessageTooLarge, ""},
		{"body exactly max", hx(ping), 2, 1, 3, nil, ""},
		{"body over max", hx(ping + "03920601"), 2, 1, 3, ErrMessageTooLarge, ""},
		{"max length prefix, partial", hx("ffffffff07"), 0, 0, 0, nil, ""},
		{"max length prefix over limit", hx("ffffffff07"), 1 << 20, 0, 0, ErrMessageTooLarge, ""},
		{"5th prefix byte too big", hx(ping + "ffffffff08"), 0, 1, 3, nil, "2^31-1"},
		{"5th prefix byte with continuation", hx("ffffffff8f01"), 0, 0, 0, nil, "2^31-1"},
		{"empty body", hx(ping + "00" + ping), 100, 1, 4, nil, "empty message"},
		{"non-minimal prefix accepted", hx("8200 9106"), 100, 1, 4, nil, ""},
		{"unknown type is skippable", hx(ping + "02910a" + ping), 100, 1, 6, ErrUnknownMessageType, ""},
		{"bad message after good", hx(ping + "01c0" + ping), 100, 1, 5, nil, "must be an array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msgs, n, err := MessagePack.ParseMessages(tt.in, tt.max)
			switch {
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
			case tt.errText != "":
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want %q", err, tt.errText)
				}
			case err != nil:
				t.Fatalf("err = %v", err)
			}
			if len(msgs) != tt.msgs || n != tt.consumed {
				t.Fatalf("got %d msgs consumed %d, want %d and %d", len(msgs), n, tt.msgs, tt.consumed)
			}
		})
	}
}

func TestMessagePackParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want string
		is   error
	}{
		{"nil body", "c0", "message must be an array: expected array, got nil", nil},
		{"map body", "80", "message must be an array: expected array, got map", nil},
		{"empty array", "90", "empty array", nil},
		{"string type", "91 a1 31", "message type: expected integer, got string", nil},
		{"float type", "91 cb 3ff0000000000000", "message type: expected integer, got float", nil},
		{"huge type", "91 cf ffffffffffffffff", "integer overflows int64", nil},
		{"type 0", "91 00", "", ErrUnknownMessageType},
		{"type 42", "91 2a", "", ErrUnknownMessageType},
		{"type -1", "91 ff", "", ErrUnknownMessageType},
		{"short invocation", "94 01 80 c0 a1 41", "protocol: invocation: array has 4 items, want at least 5", nil},
		{"short stream invocation", "94 04 80 a1 31 a1 41", "protocol: stream invocation: array has 4 items, want at least 5", nil},
		{"short stream item", "93 02 80 a1 31", "protocol: stream item: array has 3 items, want at least 4", nil},
		{"short completion", "93 03 80 a1 31", "protocol: completion: array has 3 items, want at least 4", nil},
		{"short cancel", "92 05 80", "protocol: cancel invocation: array has 2 items, want at least 3", nil},
		{"short close", "91 07", "protocol: close: array has 1 items, want at least 2", nil},
		{"short ack", "91 08", "protocol: ack: array has 1 items, want at least 2", nil},
		{"short sequence", "91 09", "protocol: sequence: array has 1 items, want at least 2", nil},
		{"array longer than data", "dd ffffffff 06", "message must be an array: unexpected end of data", nil},
		{"array claims more items than present", "95 06", "message must be an array: unexpected end of data", nil},
		{"headers not a map", "95 01 90 c0 a1 41 90", "protocol: invocation: headers: expected map, got array", nil},
		{"headers nil", "95 01 c0 c0 a1 41 90", "protocol: invocation: headers: expected map, got nil", nil},
		{"header value not a string", "95 01 81 a1 6b 01 c0 a1 41 90", `protocol: invocation: header "k": expected string, got integer`, nil},
		{"header name not a string", "95 01 81 01 a1 6b c0 a1 41 90", "protocol: invocation: header name: expected string, got integer", nil},
		{"map longer than data", "95 01 df 0000ffff", "headers: unexpected end of data", nil},
		{"invocation id not a string", "95 01 80 01 a1 41 90", "protocol: invocation: invocation id: expected string, got integer", nil},
		{"target nil", "95 01 80 c0 c0 90", "protocol: invocation: target: expected string, got nil", nil},
		{"target truncated", "95 01 80 c0 a5 41", "protocol: invocation: target: unexpected end of data", nil},
		{"arguments not an array", "95 01 80 c0 a1 41 80", "protocol: invocation: arguments: expected array, got map", nil},
		{"argument truncated", "95 01 80 c0 a1 41 91 cd 01", "protocol: invocation: argument 0: unexpected end of data", nil},
		{"argument reserved byte", "95 01 80 c0 a1 41 91 c1", "protocol: invocation: argument 0: reserved byte 0xc1", nil},
		{"argument nested truncated", "95 01 80 c0 a1 41 91 92 81 a1 61", "argument 0: unexpected end of data", nil},
		{"argument huge bin", "95 01 80 c0 a1 41 91 c6 ffffffff", "argument 0: unexpected end of data", nil},
		{"argument huge ext", "95 01 80 c0 a1 41 91 c9 ffffffff 01", "argument 0: unexpected end of data", nil},
		{"stream ids not an array", "96 01 80 c0 a1 41 90 01", "protocol: invocation: stream ids: expected array, got integer", nil},
		{"stream id not a string", "96 01 80 c0 a1 41 90 91 01", "protocol: invocation: stream ids: expected string, got integer", nil},
		{"stream invocation nil id", "95 04 80 c0 a1 41 90", "protocol: stream invocation: invocation id: missing", nil},
		{"stream item nil id", "94 02 80 c0 01", "protocol: stream item: invocation id: missing", nil},
		{"stream item empty id", "94 02 80 a0 01", "protocol: stream item: invocation id: missing", nil},
		{"completion nil id", "94 03 80 c0 02", "protocol: completion: invocation id: missing", nil},
		{"cancel nil id", "93 05 80 c0", "protocol: cancel invocation: invocation id: missing", nil},
		{"completion kind 0", "94 03 80 a1 31 00", "protocol: completion: result kind: invalid value 0 (want 1, 2 or 3)", nil},
		{"completion kind 4", "95 03 80 a1 31 04 c0", "result kind: invalid value 4", nil},
		{"completion kind string", "94 03 80 a1 31 a1 32", "protocol: completion: result kind: expected integer, got string", nil},
		{"completion error missing", "94 03 80 a1 31 01", "protocol: completion: error: missing (result kind 1 needs 5 items)", nil},
		{"completion result missing", "94 03 80 a1 31 03", "protocol: completion: result: missing (result kind 3 needs 5 items)", nil},
		{"completion error not a string", "95 03 80 a1 31 01 01", "protocol: completion: error: expected string, got integer", nil},
		{"close error not a string", "92 07 01", "protocol: close: error: expected string, got integer", nil},
		{"close allowReconnect not a bool", "93 07 c0 01", "protocol: close: allowReconnect: expected boolean, got integer", nil},
		{"ack string", "92 08 a1 31", "protocol: ack: sequence id: expected integer, got string", nil},
		{"ack overflow", "92 08 cf ffffffffffffffff", "protocol: ack: sequence id: integer overflows int64", nil},
		{"sequence truncated", "92 09 cd 01", "protocol: sequence: sequence id: unexpected end of data", nil},
		{"trailing bytes", "91 06 00", "protocol: ping: 1 trailing bytes after the array", nil},
		{"extra item truncated", "93 06 01 d9 05", "protocol: ping: item 2: unexpected end of data", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := frame(hx(tt.body))
			msgs, n, err := MessagePack.ParseMessages(in, 1<<10)
			if err == nil {
				t.Fatalf("no error, got %#v", msgs)
			}
			if len(msgs) != 0 || n != len(in) {
				t.Fatalf("got %d msgs, consumed %d of %d", len(msgs), n, len(in))
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "protocol: ") {
				t.Fatalf("err = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestMessagePackEncodeErrors(t *testing.T) {
	t.Parallel()
	dst := []byte("pre")
	for _, m := range []Message{
		&Invocation{Target: "T", Arguments: []any{make(chan int)}},
		&StreamInvocation{InvocationID: "1", Target: "T", Arguments: []any{func() {}}},
		&StreamItem{InvocationID: "1", Item: make(chan int)},
		&Completion{InvocationID: "1", HasResult: true, Result: make(chan int)},
		&Invocation{Target: "T", Arguments: []any{RawValue(nil)}},
		nil,
	} {
		out, err := MessagePack.AppendMessage(dst, m)
		if err == nil {
			t.Fatalf("%#v: no error", m)
		}
		bytesEqual(t, "dst unchanged", out, []byte("pre"))
	}
}

type taggedStruct struct {
	Name    string            `json:"name"`
	Count   int               `json:"count"`
	When    time.Time         `json:"when"`
	Blob    []byte            `json:"blob"`
	Nested  *taggedStruct     `json:"nested,omitempty"`
	Labels  map[string]string `json:"labels"`
	Ignored string            `json:"-"`
}

func TestMessagePackUnmarshal(t *testing.T) {
	t.Parallel()
	t.Run("typed struct uses json tags", func(t *testing.T) {
		t.Parallel()
		ts := time.Date(2020, 2, 3, 4, 5, 6, 7, time.UTC)
		v := taggedStruct{Name: "n", Count: -3, When: ts, Blob: []byte{9}, Nested: &taggedStruct{Name: "in", Labels: map[string]string{}}, Labels: map[string]string{"a": "b"}, Ignored: "x"}
		b := encode(t, MessagePack, &StreamItem{InvocationID: "1", Item: v})
		item := parseOne(t, MessagePack, b).(*StreamItem).Item.(RawValue)
		if !bytes.Contains(item, []byte("\xa4name")) || bytes.Contains(item, []byte("Ignored")) {
			t.Fatalf("field names not taken from json tags: % x", item)
		}
		var got taggedStruct
		if err := MessagePack.Unmarshal(item, &got); err != nil {
			t.Fatal(err)
		}
		v.Ignored = ""
		got.When = got.When.UTC()
		deepEqual(t, "struct", got, v)
		// As *any the same value becomes plain maps.
		var x any
		if err := MessagePack.Unmarshal(item, &x); err != nil {
			t.Fatal(err)
		}
		m := x.(map[string]any)
		if m["name"] != "n" || m["count"] != int64(-3) || !m["when"].(time.Time).Equal(ts) || !bytes.Equal(m["blob"].([]byte), []byte{9}) {
			t.Fatalf("any: %#v", m)
		}
		var n int
		if err := MessagePack.Unmarshal(item, &n); err == nil || !strings.HasPrefix(err.Error(), "protocol: messagepack: ") {
			t.Fatalf("map into int: %v", err)
		}
	})
	t.Run("any", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			raw  string
			want any
		}{
			{"c0", nil},
			{"c3", true},
			{"05", int64(5)},
			{"e0", int64(-32)},
			{"cc c8", int64(200)},
			{"cd 0100", int64(256)},
			{"ce ffffffff", int64(math.MaxUint32)},
			{"cf 7fffffffffffffff", int64(math.MaxInt64)},
			{"cf ffffffffffffffff", uint64(math.MaxUint64)},
			{"d0 80", int64(-128)},
			{"d1 8000", int64(-32768)},
			{"d2 80000000", int64(math.MinInt32)},
			{"d3 8000000000000000", int64(math.MinInt64)},
			{"ca 3f000000", 0.5},
			{"cb 3ff8000000000000", 1.5},
			{"a2 6869", "hi"},
			{"c4 02 0102", []byte{1, 2}},
			{"92 01 a1 78", []any{int64(1), "x"}},
			{"82 a1 61 01 a1 62 90", map[string]any{"a": int64(1), "b": []any{}}},
			{"82 01 a1 61 c3 a1 62", map[string]any{"1": "a", "true": "b"}},
			{"d6 ff 00000001", time.Unix(1, 0)},
		}
		for _, tt := range tests {
			var x any
			if err := MessagePack.Unmarshal(hx(tt.raw), &x); err != nil {
				t.Fatalf("%s: %v", tt.raw, err)
			}
			if tm, ok := x.(time.Time); ok {
				if !tm.Equal(tt.want.(time.Time)) {
					t.Fatalf("%s: %v", tt.raw, tm)
				}
				continue
			}
			deepEqual(t, tt.raw, x, tt.want)
		}
		for _, bad := range []string{"", "c1", "91", "01 02", "d4 05 00", "cd 01"} {
			var x any
			if err := MessagePack.Unmarshal(hx(bad), &x); err == nil {
				t.Fatalf("%q: no error, got %#v", bad, x)
			}
		}
		deep := bytes.Repeat([]byte{0x91}, mpMaxDepth+2)
		var x any
		if err := MessagePack.Unmarshal(append(deep, 0x01), &x); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
			t.Fatalf("deep nesting: %v", err)
		}
	})
	t.Run("raw", func(t *testing.T) {
		t.Parallel()
		src := RawValue{0x91, 0x01}
		var r RawValue
		if err := MessagePack.Unmarshal(src, &r); err != nil {
			t.Fatal(err)
		}
		src[1] = 2
		bytesEqual(t, "raw", r, []byte{0x91, 0x01})
	})
}

// Fields written by the JS client (@msgpack/msgpack) decode into typed Go values.
func TestMessagePackUnmarshalFromClientEncoding(t *testing.T) {
	t.Parallel()
	// {"name":"x","count":300} with a float64 count as JS numbers may arrive.
	var v struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	if err := MessagePack.Unmarshal(hx("82 a4 6e616d65 a1 78 a5 636f756e74 cd 012c"), &v); err != nil || v.Name != "x" || v.Count != 300 {
		t.Fatalf("%+v %v", v, err)
	}
}
