package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestJSONProtocolIdentity(t *testing.T) {
	t.Parallel()
	if JSON.Name() != "json" || JSON.Version() != 2 || JSON.TransferFormat() != TransferText {
		t.Fatalf("got %s/%d/%v", JSON.Name(), JSON.Version(), JSON.TransferFormat())
	}
	if TransferText.String() != "Text" || TransferBinary.String() != "Binary" {
		t.Fatal("TransferFormat.String")
	}
}

type person struct {
	Name  string   `json:"name"`
	Age   int      `json:"age"`
	Tags  []string `json:"tags,omitempty"`
	Skip  string   `json:"-"`
	Empty string   `json:"empty,omitempty"`
}

func TestJSONEncodeExact(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  Message
		want string
	}{
		{"ping", &Ping{}, `{"type":6}`},
		{"invocation non-blocking", &Invocation{Target: "Send", Arguments: []any{1, "a", nil, true, int64(-5), uint8(7)}},
			`{"type":1,"target":"Send","arguments":[1,"a",null,true,-5,7]}`},
		{"invocation nil args", &Invocation{Target: "Send"}, `{"type":1,"target":"Send","arguments":[]}`},
		{"invocation full", &Invocation{Headers: map[string]string{"k": "v"}, InvocationID: "7", Target: "T", Arguments: []any{RawValue(`{"x":1}`)}, StreamIDs: []string{"1", "2"}},
			`{"type":1,"headers":{"k":"v"},"invocationId":"7","target":"T","arguments":[{"x":1}],"streamIds":["1","2"]}`},
		{"invocation empty headers and stream ids", &Invocation{Headers: map[string]string{}, Target: "T", StreamIDs: []string{}},
			`{"type":1,"target":"T","arguments":[]}`},
		{"invocation struct and float", &Invocation{Target: "T", Arguments: []any{person{Name: "<a&b>", Age: 3, Skip: "x"}, 1.5, []int{1, 2}, map[string]int{"z": 1}}},
			`{"type":1,"target":"T","arguments":[{"name":"<a&b>","age":3},1.5,[1,2],{"z":1}]}`},
		{"stream invocation", &StreamInvocation{InvocationID: "3", Target: "Counter", Arguments: []any{10}},
			`{"type":4,"invocationId":"3","target":"Counter","arguments":[10]}`},
		{"stream item null", &StreamItem{InvocationID: "1"}, `{"type":2,"invocationId":"1","item":null}`},
		{"stream item value", &StreamItem{InvocationID: "1", Item: "x"}, `{"type":2,"invocationId":"1","item":"x"}`},
		{"completion void", &Completion{InvocationID: "1"}, `{"type":3,"invocationId":"1"}`},
		{"completion result null", &Completion{InvocationID: "1", HasResult: true}, `{"type":3,"invocationId":"1","result":null}`},
		{"completion result", &Completion{InvocationID: "1", HasResult: true, Result: 42}, `{"type":3,"invocationId":"1","result":42}`},
		{"completion error", &Completion{InvocationID: "1", Error: "boom"}, `{"type":3,"invocationId":"1","error":"boom"}`},
		{"completion error wins", &Completion{InvocationID: "1", Error: "boom", HasResult: true, Result: 1}, `{"type":3,"invocationId":"1","error":"boom"}`},
		{"cancel", &CancelInvocation{InvocationID: "9"}, `{"type":5,"invocationId":"9"}`},
		{"close bare", &Close{}, `{"type":7}`},
		{"close aspnet", &Close{Error: "Connection closed with an error.", AllowReconnect: true},
			`{"type":7,"error":"Connection closed with an error.","allowReconnect":true}`},
		{"close reconnect only", &Close{AllowReconnect: true}, `{"type":7,"allowReconnect":true}`},
		{"ack", &Ack{SequenceID: 5}, `{"type":8,"sequenceId":5}`},
		{"sequence", &Sequence{SequenceID: 1 << 40}, `{"type":9,"sequenceId":1099511627776}`},
		{"escaping", &Invocation{Target: "a\"b\\c\n\r\t\b\f\x01\u2028\u2029é\xff<>", Arguments: []any{}},
			`{"type":1,"target":"a\"b\\c\n\r\t\b\f\u0001\u2028\u2029é\ufffd<>","arguments":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := encode(t, JSON, tt.msg)
			bytesEqual(t, "encoding", got, []byte(tt.want+"\x1e"))
		})
	}
}

func TestJSONEncodeAppendsAndFailsCleanly(t *testing.T) {
	t.Parallel()
	dst := []byte("prefix")
	out, err := JSON.AppendMessage(dst, &Ping{})
	if err != nil || string(out) != "prefix{\"type\":6}\x1e" {
		t.Fatalf("got %q, %v", out, err)
	}
	for _, m := range []Message{
		&Invocation{Target: "T", Arguments: []any{make(chan int)}},
		&StreamItem{InvocationID: "1", Item: func() {}},
		&Completion{InvocationID: "1", HasResult: true, Result: make(chan int)},
		&Invocation{Target: "T", Arguments: []any{RawValue{}}},
		nil,
	} {
		out, err := JSON.AppendMessage(dst, m)
		if err == nil {
			t.Fatalf("%#v: no error", m)
		}
		if string(out) != "prefix" {
			t.Fatalf("%#v: dst changed to %q", m, out)
		}
	}
}

func TestJSONParseClientMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want Message
	}{
		{"invocation type last", `{"target":"Send","arguments":[1],"invocationId":"0","type":1}`,
			&Invocation{InvocationID: "0", Target: "Send", Arguments: []any{int64(1)}}},
		{"invocation non-blocking", `{"type":1,"target":"Send","arguments":["a",{"b":[1.5,null]}]}`,
			&Invocation{Target: "Send", Arguments: []any{"a", map[string]any{"b": []any{1.5, nil}}}}},
		{"invocation null id", `{"type":1,"invocationId":null,"target":"Send","arguments":[]}`,
			&Invocation{Target: "Send", Arguments: []any{}}},
		{"invocation stream ids", `{"target":"Up","arguments":[],"streamIds":["1"],"invocationId":"0","type":1}`,
			&Invocation{InvocationID: "0", Target: "Up", Arguments: []any{}, StreamIDs: []string{"1"}}},
		{"invocation null stream ids and headers", `{"type":1,"target":"A","arguments":[],"streamIds":null,"headers":null}`,
			&Invocation{Target: "A", Arguments: []any{}}},
		{"headers", `{"type":1,"headers":{"a":"1","b\n":"\u00e9"},"target":"A","arguments":[]}`,
			&Invocation{Headers: map[string]string{"a": "1", "b\n": "é"}, Target: "A", Arguments: []any{}}},
		{"unknown properties and whitespace", " {\n \"foo\" : {\"x\":[1,\"]\"]}, \"target\":\"A\" ,\"arguments\": [ 1 , 2 ],\"type\":1 , \"bar\":null}\t",
			&Invocation{Target: "A", Arguments: []any{int64(1), int64(2)}}},
		{"stream invocation", `{"target":"Counter","arguments":[10,500],"invocationId":"1","type":4}`,
			&StreamInvocation{InvocationID: "1", Target: "Counter", Arguments: []any{int64(10), int64(500)}}},
		{"stream item", `{"invocationId":"0","item":{"a":1},"type":2}`,
			&StreamItem{InvocationID: "0", Item: map[string]any{"a": int64(1)}}},
		{"stream item null", `{"invocationId":"0","item":null,"type":2}`, &StreamItem{InvocationID: "0"}},
		{"completion void", `{"invocationId":"0","type":3}`, &Completion{InvocationID: "0"}},
		{"completion result null", `{"invocationId":"0","result":null,"type":3}`, &Completion{InvocationID: "0", HasResult: true}},
		{"completion result", `{"invocationId":"0","result":"ok","type":3}`, &Completion{InvocationID: "0", HasResult: true, Result: "ok"}},
		{"completion error", `{"invocationId":"0","error":"Client didn't provide a result.","type":3}`,
			&Completion{InvocationID: "0", Error: "Client didn't provide a result."}},
		{"completion null error with result", `{"invocationId":"0","error":null,"result":1,"type":3}`,
			&Completion{InvocationID: "0", HasResult: true, Result: int64(1)}},
		{"cancel", `{"invocationId":"1","type":5}`, &CancelInvocation{InvocationID: "1"}},
		{"ping", `{"type":6}`, &Ping{}},
		{"close from client", `{"type":7}`, &Close{}},
		{"close full", `{"type":7,"error":"bye","allowReconnect":true}`, &Close{Error: "bye", AllowReconnect: true}},
		{"close null error", `{"type":7,"error":null,"allowReconnect":false}`, &Close{}},
		{"ack", `{"sequenceId":3,"type":8}`, &Ack{SequenceID: 3}},
		{"sequence", `{"type":9,"sequenceId":-1}`, &Sequence{SequenceID: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := decodeValues(t, JSON, parseOne(t, JSON, []byte(tt.in+"\x1e")))
			deepEqual(t, "message", got, tt.want)
		})
	}
}

func TestJSONRawValuesAreCopies(t *testing.T) {
	t.Parallel()
	in := []byte(`{"type":1,"target":"A","arguments":[{"x":1},[2]]}` + "\x1e")
	m := parseOne(t, JSON, in).(*Invocation)
	a0 := m.Arguments[0].(RawValue)
	bytesEqual(t, "arg0", a0, []byte(`{"x":1}`))
	bytesEqual(t, "arg1", m.Arguments[1].(RawValue), []byte(`[2]`))
	for i := range in {
		in[i] = 'X'
	}
	bytesEqual(t, "arg0 after input reuse", a0, []byte(`{"x":1}`))
	if cap(a0) != len(a0) {
		t.Fatalf("RawValue has spare capacity %d > %d: appending would clobber a sibling", cap(a0), len(a0))
	}
}

func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	msgs := []Message{
		&Invocation{Target: "Send", Arguments: []any{int64(1), "two", nil, true, 2.5, []any{int64(1), "x"}, map[string]any{"k": map[string]any{"n": int64(-3)}}}},
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
		&Close{Error: "err \u00e9\u2028", AllowReconnect: true},
		&Ack{SequenceID: 0},
		&Ack{SequenceID: 1<<63 - 1},
		&Sequence{SequenceID: -1 << 63},
	}
	var all []byte
	for _, m := range msgs {
		b := encode(t, JSON, m)
		got := decodeValues(t, JSON, parseOne(t, JSON, b))
		deepEqual(t, string(b), got, m)
		all = append(all, b...)
	}
	// All records in one buffer.
	got, n, err := JSON.ParseMessages(all, 1<<10)
	if err != nil || n != len(all) || len(got) != len(msgs) {
		t.Fatalf("multi: %d msgs, consumed %d/%d, %v", len(got), n, len(all), err)
	}
	for i := range got {
		deepEqual(t, "multi", decodeValues(t, JSON, got[i]), msgs[i])
	}
}

func TestJSONFraming(t *testing.T) {
	t.Parallel()
	ping := "{\"type\":6}\x1e" // 10-byte record + RS
	tests := []struct {
		name     string
		in       string
		max      int
		msgs     int
		consumed int
		err      error
	}{
		{"empty input", "", 100, 0, 0, nil},
		{"one", ping, 100, 1, 11, nil},
		{"three", ping + ping + ping, 100, 3, 33, nil},
		{"trailing partial", ping + ping + `{"ty`, 100, 2, 22, nil},
		{"only partial", `{"type":6}`, 100, 0, 0, nil},
		{"record exactly max", ping, 10, 1, 11, nil},
		{"record over max", ping, 9, 0, 0, ErrMessageTooLarge},
		{"second record over max", ping + `{"type":6, "x":1}` + "\x1e", 10, 1, 11, ErrMessageTooLarge},
		{"partial exactly max", ping + `{"type":6}`, 10, 1, 11, nil},
		{"partial over max", ping + `{"type":6} `, 10, 1, 11, ErrMessageTooLarge},
		{"no limit", ping + strings.Repeat(" ", 1000) + ping, 0, 2, 1022, nil},
		{"bad record after good", ping + "{\x1e" + ping, 100, 1, 13, nil},
		{"unknown type is skippable", ping + `{"type":99}` + "\x1e" + ping, 100, 1, 23, ErrUnknownMessageType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msgs, n, err := JSON.ParseMessages([]byte(tt.in), tt.max)
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if tt.name == "bad record after good" && err == nil {
				t.Fatal("no error")
			}
			if tt.err == nil && tt.name != "bad record after good" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if len(msgs) != tt.msgs || n != tt.consumed {
				t.Fatalf("got %d msgs consumed %d, want %d and %d", len(msgs), n, tt.msgs, tt.consumed)
			}
		})
	}
}

func TestJSONParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string // substring of the error
		is   error
	}{
		{"", "empty record", nil},
		{"  \n", "empty record", nil},
		{"{", "invalid JSON", nil},
		{`{"type":6} x`, "invalid JSON", nil},
		{`{"type":6}{"type":6}`, "invalid JSON", nil},
		{"\"type\"", "JSON string, not an object", nil},
		{"[1]", "JSON array, not an object", nil},
		{"{}", `missing "type"`, nil},
		{`{"target":"A"}`, `missing "type"`, nil},
		{`{"type":"1"}`, `"type" must be an integer`, nil},
		{`{"type":1.5}`, `"type" must be an integer`, nil},
		{`{"type":1e0}`, `"type" must be an integer`, nil},
		{`{"type":null}`, `"type" must be an integer`, nil},
		{`{"type":99999999999999999999}`, `"type" must be an integer`, nil},
		{`{"type":0}`, "", ErrUnknownMessageType},
		{`{"type":10}`, "", ErrUnknownMessageType},
		{`{"type":-1}`, "", ErrUnknownMessageType},
		{`{"type":1,"arguments":[]}`, `protocol: invocation: missing "target"`, nil},
		{`{"type":1,"target":"a"}`, `protocol: invocation: missing "arguments"`, nil},
		{`{"type":1,"target":1,"arguments":[]}`, `"target" must be a string, got number`, nil},
		{`{"type":1,"target":null,"arguments":[]}`, `"target" must be a string, got null`, nil},
		{`{"type":1,"target":"a","arguments":{}}`, `"arguments" must be an array, got object`, nil},
		{`{"type":1,"target":"a","arguments":null}`, `"arguments" must be an array, got null`, nil},
		{`{"type":1,"target":"a","arguments":[],"headers":[]}`, `"headers" must be an object, got array`, nil},
		{`{"type":1,"target":"a","arguments":[],"headers":{"k":1}}`, `header "k" must be a string, got number`, nil},
		{`{"type":1,"target":"a","arguments":[],"streamIds":"1"}`, `"streamIds" must be an array, got string`, nil},
		{`{"type":1,"target":"a","arguments":[],"streamIds":[1]}`, `"streamIds" must hold strings, got number`, nil},
		{`{"type":1,"target":"a","arguments":[],"invocationId":1}`, `"invocationId" must be a string, got number`, nil},
		{`{"type":4,"target":"a","arguments":[]}`, `protocol: stream invocation: missing "invocationId"`, nil},
		{`{"type":4,"invocationId":"","target":"a","arguments":[]}`, `protocol: stream invocation: missing "invocationId"`, nil},
		{`{"type":4,"invocationId":"1","arguments":[]}`, `protocol: stream invocation: missing "target"`, nil},
		{`{"type":2,"invocationId":"1"}`, `protocol: stream item: missing "item"`, nil},
		{`{"type":2,"item":1}`, `protocol: stream item: missing "invocationId"`, nil},
		{`{"type":3}`, `protocol: completion: missing "invocationId"`, nil},
		{`{"type":3,"invocationId":"1","error":"x","result":1}`, `"error" and "result" are mutually exclusive`, nil},
		{`{"type":3,"invocationId":"1","error":"","result":null}`, `"error" and "result" are mutually exclusive`, nil},
		{`{"type":3,"invocationId":"1","error":5}`, `"error" must be a string, got number`, nil},
		{`{"type":5}`, `protocol: cancel invocation: missing "invocationId"`, nil},
		{`{"type":7,"allowReconnect":"yes"}`, `"allowReconnect" must be a boolean, got string`, nil},
		{`{"type":7,"allowReconnect":1}`, `"allowReconnect" must be a boolean, got number`, nil},
		{`{"type":8}`, `protocol: ack: missing "sequenceId"`, nil},
		{`{"type":9}`, `protocol: sequence: missing "sequenceId"`, nil},
		{`{"type":9,"sequenceId":"1"}`, `"sequenceId" must be an integer`, nil},
		{`{"type":8,"sequenceId":1.0}`, `"sequenceId" must be an integer`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			msgs, n, err := JSON.ParseMessages([]byte(tt.in+"\x1e"), 1<<10)
			if err == nil {
				t.Fatalf("no error, got %#v", msgs)
			}
			if len(msgs) != 0 || n != len(tt.in)+1 {
				t.Fatalf("got %d msgs, consumed %d", len(msgs), n)
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

func TestJSONUnmarshal(t *testing.T) {
	t.Parallel()
	t.Run("typed struct", func(t *testing.T) {
		t.Parallel()
		b := encode(t, JSON, &Invocation{Target: "T", Arguments: []any{person{Name: "Ann", Age: 41, Tags: []string{"a"}}, 7}})
		m := parseOne(t, JSON, b).(*Invocation)
		var p person
		if err := JSON.Unmarshal(m.Arguments[0].(RawValue), &p); err != nil {
			t.Fatal(err)
		}
		deepEqual(t, "person", p, person{Name: "Ann", Age: 41, Tags: []string{"a"}})
		var n int
		if err := JSON.Unmarshal(m.Arguments[1].(RawValue), &n); err != nil || n != 7 {
			t.Fatalf("int: %d, %v", n, err)
		}
		if err := JSON.Unmarshal(m.Arguments[0].(RawValue), &n); err == nil || !strings.HasPrefix(err.Error(), "protocol: json: ") {
			t.Fatalf("object into int: %v", err)
		}
	})
	t.Run("any", func(t *testing.T) {
		t.Parallel()
		var x any
		raw := RawValue(`{"i":1,"neg":-2,"f":1.5,"e":1e2,"max":9223372036854775807,"big":9223372036854775808,"a":[true,null,"s",{}],"o":{"p":[]}}`)
		if err := JSON.Unmarshal(raw, &x); err != nil {
			t.Fatal(err)
		}
		deepEqual(t, "any", x, map[string]any{
			"i": int64(1), "neg": int64(-2), "f": 1.5, "e": 100.0, "max": int64(1<<63 - 1), "big": 9223372036854775808.0,
			"a": []any{true, nil, "s", map[string]any{}}, "o": map[string]any{"p": []any{}},
		})
		for _, bad := range []string{"", "{", "1 2", `"x"}`} {
			if err := JSON.Unmarshal(RawValue(bad), &x); err == nil {
				t.Fatalf("%q: no error", bad)
			}
		}
		if err := JSON.Unmarshal(RawValue(" 3 "), &x); err != nil || x != int64(3) {
			t.Fatalf("padded number: %#v %v", x, err)
		}
	})
	t.Run("raw", func(t *testing.T) {
		t.Parallel()
		src := RawValue(`[1]`)
		var r RawValue
		if err := JSON.Unmarshal(src, &r); err != nil {
			t.Fatal(err)
		}
		src[1] = '2'
		bytesEqual(t, "raw", r, []byte(`[1]`))
	})
}

// A value decoded from JSON into *any re-encodes into MessagePack faithfully.
func TestJSONToAnyToMessagePack(t *testing.T) {
	t.Parallel()
	in := `{"type":1,"target":"T","arguments":[{"n":1,"f":0.5,"s":"x","l":[-1,300,null,false],"m":{}},70000,-40000]}` + "\x1e"
	jm := parseOne(t, JSON, []byte(in)).(*Invocation)
	vals := make([]any, len(jm.Arguments))
	for i, a := range jm.Arguments {
		if err := JSON.Unmarshal(a.(RawValue), &vals[i]); err != nil {
			t.Fatal(err)
		}
	}
	b := encode(t, MessagePack, &Invocation{Target: "T", Arguments: vals})
	mm := decodeValues(t, MessagePack, parseOne(t, MessagePack, b)).(*Invocation)
	deepEqual(t, "arguments", mm.Arguments, vals)
	// Integers go out compact: 70000 is uint32 (0xce), -40000 int32 (0xd2).
	raw := parseOne(t, MessagePack, b).(*Invocation).Arguments
	bytesEqual(t, "70000", raw[1].(RawValue), []byte{0xce, 0x00, 0x01, 0x11, 0x70})
	bytesEqual(t, "-40000", raw[2].(RawValue), []byte{0xd2, 0xff, 0xff, 0x63, 0xc0})
}

// TestJSONRejectsInvalidUTF8: a record that is not UTF-8 is refused, so
// its raw arguments cannot reach other clients' text frames; the records
// before it are returned.
func TestJSONRejectsInvalidUTF8(t *testing.T) {
	t.Parallel()
	data := []byte("{\"type\":6}\x1e{\"type\":1,\"target\":\"echo\",\"arguments\":[\"\xff\"]}\x1e")
	msgs, _, err := JSON.ParseMessages(data, 1<<10)
	if err == nil || !strings.Contains(err.Error(), "not valid UTF-8") || len(msgs) != 1 {
		t.Fatalf("ParseMessages = %d messages, %v; want the Ping, then a UTF-8 error", len(msgs), err)
	}
	if _, _, err := ParseHandshakeRequest([]byte("{\"protocol\":\"\xffjson\",\"version\":1}\x1e"), 1<<10); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("handshake with invalid UTF-8: %v", err)
	}
}
