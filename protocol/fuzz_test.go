package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// checkParseRoundTrip is the property shared by the message fuzz targets:
// parsing never panics, consumed stays in range and stops only at a partial
// record, and whatever parses re-encodes into bytes that parse back into the
// same messages.
func checkParseRoundTrip(t *testing.T, p HubProtocol, data []byte) {
	msgs, n, err := p.ParseMessages(data, 1<<16)
	if n < 0 || n > len(data) {
		t.Fatalf("consumed %d of %d", n, len(data))
	}
	if err == nil && n < len(data) {
		// What is left must be a partial record: parsing it yields nothing.
		rest, n2, err2 := p.ParseMessages(data[n:], 1<<16)
		if len(rest) != 0 || n2 != 0 || err2 != nil {
			t.Fatalf("remainder %q parsed to %d msgs, consumed %d, err %v", short(data[n:]), len(rest), n2, err2)
		}
	}
	var buf []byte
	for _, m := range msgs {
		if buf, err = p.AppendMessage(buf, m); err != nil {
			t.Fatalf("re-encode %#v: %v", m, err)
		}
		// Binding values must not panic (errors are fine: e.g. extension types).
		var x any
		switch m := m.(type) {
		case *Invocation:
			for _, a := range m.Arguments {
				_ = p.Unmarshal(a.(RawValue), &x)
			}
		case *StreamItem:
			_ = p.Unmarshal(m.Item.(RawValue), &x)
		case *Completion:
			if m.HasResult {
				_ = p.Unmarshal(m.Result.(RawValue), &x)
			}
		}
	}
	again, n2, err := p.ParseMessages(buf, 0)
	if err != nil || n2 != len(buf) {
		t.Fatalf("re-parse %q: consumed %d of %d, %v", short(buf), n2, len(buf), err)
	}
	if !reflect.DeepEqual(again, msgs) {
		t.Fatalf("round trip changed messages:\n got  %#v\n want %#v", again, msgs)
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		"{\"type\":6}\x1e",
		"{\"target\":\"Send\",\"arguments\":[1],\"invocationId\":\"0\",\"type\":1}\x1e",
		"{\"type\":1,\"headers\":{\"a\":\"b\"},\"target\":\"T\",\"arguments\":[{\"x\":[1.5,null,\"\\u00e9\"]}],\"streamIds\":[\"1\"]}\x1e{\"ty",
		"{\"invocationId\":\"0\",\"item\":{\"a\":1},\"type\":2}\x1e{\"invocationId\":\"0\",\"type\":3}\x1e",
		"{\"invocationId\":\"0\",\"result\":null,\"type\":3}\x1e{\"invocationId\":\"0\",\"error\":\"e\",\"type\":3}\x1e",
		"{\"target\":\"C\",\"arguments\":[],\"invocationId\":\"1\",\"type\":4}\x1e{\"invocationId\":\"1\",\"type\":5}\x1e",
		"{\"type\":7,\"error\":\"x\",\"allowReconnect\":true}\x1e{\"type\":8,\"sequenceId\":1}\x1e{\"type\":9,\"sequenceId\":2}\x1e",
		"{\"type\":99}\x1e",
		"\x1e",
		"{\"type\":1,\"target\":\"\\ud800\",\"arguments\":[\"\xff\"]}\x1e",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParseRoundTrip(t, JSON, data)
	})
}

func FuzzParseMessagePack(f *testing.F) {
	for _, s := range []string{
		"029106",
		"0f960180c0a548656c6c6f91a2686990",
		"0a9501 80 a130 a453656e64 9101",
		"069401 80 c0 a141 90",
		"0694028 0a130c0 0594038 0a13002",
		"0795038 0a13003c0 0895038 0a13001a162",
		"0a960480a131a14391 0a91a131 0593058 0a131",
		"03920 7c0 0493 07a165c3 0392 0805 0492 09d0fe",
		"0e97 0181a161a162c0a14190 90 81a17893",
		"0891 0a 029106 ffffffff08",
		"0b9501 80c0a14191 d6ff00000001",
	} {
		f.Add(hx(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParseRoundTrip(t, MessagePack, data)
	})
}

func FuzzParseHandshakeRequest(f *testing.F) {
	for _, s := range []string{
		"{\"protocol\":\"json\",\"version\":1}\x1e",
		"{\"protocol\":\"messagepack\",\"version\":2}\x1e\x02\x91\x06",
		"{\"version\":1,\"x\":[{}],\"protocol\":\"j\\u0073on\"}\x1e",
		"{\"protocol\":\"json\"",
		"{}\x1e",
		"{\"error\":\"x\"}\x1e",
		"{\"type\":6}\x1e",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, n, err := ParseHandshakeRequest(data, 1<<12)
		if n < 0 || n > len(data) {
			t.Fatalf("consumed %d of %d", n, len(data))
		}
		if err == nil {
			enc := AppendHandshakeRequest(nil, req)
			again, n2, err := ParseHandshakeRequest(enc, 0)
			if err != nil || n2 != len(enc) || again != req {
				t.Fatalf("round trip %+v -> %q -> %+v, %v", req, enc, again, err)
			}
		}
		// The transport parses after every chunk it reads (readHandshake):
		// every prefix must be incomplete, or fail as the whole does, or
		// give what the whole gives.
		for k := range len(data) {
			preq, pn, perr := ParseHandshakeRequest(data[:k], 1<<12)
			switch {
			case errors.Is(perr, ErrIncomplete):
			case perr == nil && (err != nil || preq != req || pn != n):
				t.Fatalf("prefix %q parses to %+v (%d bytes), the whole %q to %+v (%d bytes), %v", data[:k], preq, pn, data, req, n, err)
			case perr != nil && err == nil:
				t.Fatalf("prefix %q fails with %v, the whole %q parses", data[:k], perr, data)
			}
		}
		resp, n, err := ParseHandshakeResponse(data)
		if n < 0 || n > len(data) {
			t.Fatalf("consumed %d of %d", n, len(data))
		}
		if err == nil {
			enc := AppendHandshakeResponse(nil, resp.Error)
			again, n2, err := ParseHandshakeResponse(enc)
			if err != nil || n2 != len(enc) || again != resp {
				t.Fatalf("round trip %+v -> %q -> %+v, %v", resp, enc, again, err)
			}
		}
	})
}

// normalizeNegotiate makes nil and empty transport lists compare equal.
func normalizeNegotiate(r NegotiateResponse) NegotiateResponse {
	if len(r.AvailableTransports) == 0 {
		r.AvailableTransports = nil
	}
	ts := make([]AvailableTransport, len(r.AvailableTransports))
	for i, tr := range r.AvailableTransports {
		if len(tr.TransferFormats) == 0 {
			tr.TransferFormats = nil
		}
		ts[i] = tr
	}
	if len(ts) > 0 {
		r.AvailableTransports = ts
	}
	return r
}

func FuzzParseNegotiateResponse(f *testing.F) {
	for _, s := range []string{
		`{"negotiateVersion":1,"connectionId":"id","connectionToken":"tok",` + transportsJSON + `}`,
		`{"useStatefulReconnect":true,"negotiateVersion":1,"url":"u","accessToken":"a","connectionId":"i","availableTransports":[null,{"transport":"x"}]}`,
		`{"error":"nope"}`,
		`{"ProtocolVersion":"1.5"}`,
		`{"negotiateVersion":-1.5,"connectionId":"\u00e9"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseNegotiateResponse(data)
		if err != nil {
			return
		}
		if r.Error != "" {
			r = NegotiateResponse{Error: r.Error}
		}
		enc := AppendNegotiateResponse(nil, r)
		again, err := ParseNegotiateResponse(enc)
		if err != nil {
			t.Fatalf("re-parse %q: %v", enc, err)
		}
		if !reflect.DeepEqual(normalizeNegotiate(again), normalizeNegotiate(r)) {
			t.Fatalf("round trip %+v -> %s -> %+v", r, enc, again)
		}
	})
}

// FuzzUnmarshalJSONArgument holds the JSON protocol's fast path for plain
// strings to the general decoders: a string or any argument decodes to
// the same value, and fails the same way, whichever path takes it.
func FuzzUnmarshalJSONArgument(f *testing.F) {
	for _, s := range []string{`"g7"`, `"hi there"`, `"é"`, `"\u00e9"`, `"a\"b"`, `"a"b"`, `""`, `"`, `"` + "\xff" + `"`,
		`"tab` + "\t" + `"`, ` "x"`, `"x" `, `12`, `null`, `{"a":[1,2.5]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var got, want string
		gotErr := JSON.Unmarshal(raw, &got)
		wantErr := json.Unmarshal(raw, &want)
		if (gotErr == nil) != (wantErr == nil) || got != want {
			t.Fatalf("string %q: got %q, %v; encoding/json: %q, %v", raw, got, gotErr, want, wantErr)
		}
		var gotAny any
		gotErr = JSON.Unmarshal(raw, &gotAny)
		wantAny, wantErr := decodeJSONAny(raw)
		if (gotErr == nil) != (wantErr == nil) || !reflect.DeepEqual(gotAny, wantAny) {
			t.Fatalf("any %q: got %#v, %v; general decoder: %#v, %v", raw, gotAny, gotErr, wantAny, wantErr)
		}
	})
}
