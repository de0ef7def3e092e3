package protocol

import (
	"bytes"
	"reflect"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// parseOne parses data, which must hold exactly one complete record.
func parseOne(t *testing.T, p HubProtocol, data []byte) Message {
	t.Helper()
	msgs, n, err := p.ParseMessages(data, 0)
	if err != nil {
		t.Fatalf("%s parse %q: %v", p.Name(), short(data), err)
	}
	if n != len(data) || len(msgs) != 1 {
		t.Fatalf("%s parse %q: %d messages, consumed %d of %d", p.Name(), short(data), len(msgs), n, len(data))
	}
	return msgs[0]
}

// encode encodes m and fails the test on error.
func encode(t *testing.T, p HubProtocol, m Message) []byte {
	t.Helper()
	b, err := p.AppendMessage(nil, m)
	if err != nil {
		t.Fatalf("%s encode %#v: %v", p.Name(), m, err)
	}
	return b
}

// decodeValues replaces every RawValue in m (arguments, item, result) with
// its *any decoding by p, so messages can be compared with plain Go values.
func decodeValues(t *testing.T, p HubProtocol, m Message) Message {
	t.Helper()
	dec := func(v any) any {
		raw, ok := v.(RawValue)
		if !ok {
			t.Fatalf("value %#v is a %T, want RawValue", v, v)
		}
		var x any
		if err := p.Unmarshal(raw, &x); err != nil {
			t.Fatalf("unmarshal %q: %v", raw, err)
		}
		return x
	}
	decArgs := func(args []any) []any {
		out := make([]any, len(args))
		for i, a := range args {
			out[i] = dec(a)
		}
		return out
	}
	switch m := m.(type) {
	case *Invocation:
		c := *m
		c.Arguments = decArgs(m.Arguments)
		return &c
	case *StreamInvocation:
		c := *m
		c.Arguments = decArgs(m.Arguments)
		return &c
	case *StreamItem:
		c := *m
		c.Item = dec(m.Item)
		return &c
	case *Completion:
		c := *m
		if c.HasResult {
			c.Result = dec(m.Result)
		}
		return &c
	}
	return m
}

func deepEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %#v\n want %#v", what, got, want)
	}
}

func bytesEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got  %q\n want %q", what, short(got), short(want))
	}
}

// short truncates b for error messages.
func short(b []byte) []byte {
	if len(b) > 200 {
		return append(b[:200:200], "..."...)
	}
	return b
}
