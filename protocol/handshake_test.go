package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestParseHandshakeRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		max      int
		want     HandshakeRequest
		consumed int
		err      error
		errText  string
	}{
		{"json v1", "{\"protocol\":\"json\",\"version\":1}\x1e", 100, HandshakeRequest{"json", 1}, -1, nil, ""},
		{"messagepack v2 with ping after", "{\"protocol\":\"messagepack\",\"version\":2}\x1e\x02\x91\x06", 100, HandshakeRequest{"messagepack", 2}, -1, nil, ""},
		{"reordered, unknown properties, whitespace", " { \"version\" : 1 , \"x\":{\"protocol\":1}, \"protocol\" : \"json\" } \x1e{\"type\":6}\x1e", 100, HandshakeRequest{"json", 1}, -1, nil, ""},
		{"escaped protocol", "{\"protocol\":\"js\\u006fn\",\"version\":1}\x1e", 100, HandshakeRequest{"json", 1}, -1, nil, ""},
		{"unlimited", "{\"protocol\":\"json\",\"version\":1}\x1e", 0, HandshakeRequest{"json", 1}, -1, nil, ""},
		{"exactly max", "{\"protocol\":\"json\",\"version\":1}\x1e", 31, HandshakeRequest{"json", 1}, -1, nil, ""},
		{"empty input", "", 100, HandshakeRequest{}, 0, ErrIncomplete, ""},
		{"no separator", "{\"protocol\":\"json\",\"version\":1}", 100, HandshakeRequest{}, 0, ErrIncomplete, ""},
		{"no separator at max", "{\"protocol\":\"json\",\"version\":1}", 31, HandshakeRequest{}, 0, ErrIncomplete, ""},
		{"no separator past max", "{\"protocol\":\"json\",\"version\":1}", 30, HandshakeRequest{}, 0, ErrMessageTooLarge, ""},
		{"complete but past max", "{\"protocol\":\"json\",\"version\":1}\x1e", 30, HandshakeRequest{}, 0, ErrMessageTooLarge, ""},
		{"empty record", "\x1e", 100, HandshakeRequest{}, 0, nil, "protocol: handshake: empty record"},
		{"not JSON", "hello\x1e", 100, HandshakeRequest{}, 0, nil, "protocol: handshake: invalid JSON"},
		{"not an object", "[\"json\",1]\x1e", 100, HandshakeRequest{}, 0, nil, "expected a JSON object, got array"},
		{"missing protocol", "{\"version\":1}\x1e", 100, HandshakeRequest{}, 0, nil, `protocol: handshake: missing "protocol"`},
		{"missing version", "{\"protocol\":\"json\"}\x1e", 100, HandshakeRequest{}, 0, nil, `protocol: handshake: missing "version"`},
		{"protocol not a string", "{\"protocol\":1,\"version\":1}\x1e", 100, HandshakeRequest{}, 0, nil, `"protocol" must be a string, got number`},
		{"protocol null", "{\"protocol\":null,\"version\":1}\x1e", 100, HandshakeRequest{}, 0, nil, `"protocol" must be a string, got null`},
		{"version a string", "{\"protocol\":\"json\",\"version\":\"1\"}\x1e", 100, HandshakeRequest{}, 0, nil, `"version" must be a 32-bit integer, got "1"`},
		{"version a float", "{\"protocol\":\"json\",\"version\":1.5}\x1e", 100, HandshakeRequest{}, 0, nil, `"version" must be a 32-bit integer`},
		{"version too big", "{\"protocol\":\"json\",\"version\":4294967296}\x1e", 100, HandshakeRequest{}, 0, nil, `"version" must be a 32-bit integer`},
		{"case-sensitive names", "{\"Protocol\":\"json\",\"Version\":1}\x1e", 100, HandshakeRequest{}, 0, nil, `missing "protocol"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, n, err := ParseHandshakeRequest([]byte(tt.in), tt.max)
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
			if tt.consumed < 0 {
				tt.consumed = strings.IndexByte(tt.in, RecordSeparator) + 1
			}
			if req != tt.want || n != tt.consumed {
				t.Fatalf("got %+v consumed %d, want %+v and %d", req, n, tt.want, tt.consumed)
			}
		})
	}
}

func TestAppendHandshake(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"request json", AppendHandshakeRequest(nil, HandshakeRequest{"json", 1}), "{\"protocol\":\"json\",\"version\":1}\x1e"},
		{"request messagepack", AppendHandshakeRequest([]byte("x"), HandshakeRequest{"messagepack", 2}), "x{\"protocol\":\"messagepack\",\"version\":2}\x1e"},
		{"response ok", AppendHandshakeResponse(nil, ""), "{}\x1e"},
		{"response error", AppendHandshakeResponse(nil, HandshakeErrorUnsupportedProtocol(`x"y`)),
			"{\"error\":\"The protocol 'x\\\"y' is not supported.\"}\x1e"},
		{"response control chars", AppendHandshakeResponse(nil, "a\nb\x1e"), "{\"error\":\"a\\nb\\u001e\"}\x1e"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bytesEqual(t, tt.name, tt.got, []byte(tt.want))
		})
	}
	enc := AppendHandshakeRequest(nil, HandshakeRequest{"we\"ird\x01", -3})
	req, n, err := ParseHandshakeRequest(enc, 0)
	if err != nil || req != (HandshakeRequest{"we\"ird\x01", -3}) || n != len(enc) {
		t.Fatalf("round trip: %+v %d %v", req, n, err)
	}
}

func TestHandshakeErrorStrings(t *testing.T) {
	t.Parallel()
	tests := []struct{ got, want string }{
		{HandshakeErrorUnsupportedProtocol("foo"), "The protocol 'foo' is not supported."},
		{HandshakeErrorUnsupportedVersion("json", 3), "The server does not support version 3 of the 'json' protocol."},
		{HandshakeErrorTransferFormat("messagepack", TransferBinary), "Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format."},
		{HandshakeErrorCanceled, "Handshake was canceled."},
		{HandshakeErrorUnexpected, "An unexpected error occurred during connection handshake."},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q want %q", tt.got, tt.want)
		}
	}
}

func TestParseHandshakeResponse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		want     HandshakeResponse
		consumed int
		err      error
		errText  string
	}{
		{"ok", "{}\x1e", HandshakeResponse{}, -1, nil, ""},
		{"ok then messages", "{}\x1e{\"type\":6}\x1e", HandshakeResponse{}, -1, nil, ""},
		{"ok then msgpack", "{}\x1e\x02\x91\x06", HandshakeResponse{}, -1, nil, ""},
		{"error", "{\"error\":\"The protocol 'x' is not supported.\"}\x1e", HandshakeResponse{Error: "The protocol 'x' is not supported."}, -1, nil, ""},
		{"old minorVersion", "{\"minorVersion\":1}\x1e", HandshakeResponse{}, -1, nil, ""},
		{"null error", "{\"error\":null}\x1e", HandshakeResponse{}, -1, nil, ""},
		{"incomplete", "{}", HandshakeResponse{}, 0, ErrIncomplete, ""},
		{"empty", "", HandshakeResponse{}, 0, ErrIncomplete, ""},
		{"hub message instead", "{\"type\":6}\x1e", HandshakeResponse{}, 0, nil, "expected a handshake response"},
		{"type 0 is still a type", "{\"type\":0}\x1e", HandshakeResponse{}, 0, nil, "expected a handshake response"},
		{"not JSON", "ok\x1e", HandshakeResponse{}, 0, nil, "invalid JSON"},
		{"not an object", "1\x1e", HandshakeResponse{}, 0, nil, "expected a JSON object, got number"},
		{"error not a string", "{\"error\":1}\x1e", HandshakeResponse{}, 0, nil, `"error" must be a string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, n, err := ParseHandshakeResponse([]byte(tt.in))
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
			if tt.consumed < 0 {
				tt.consumed = strings.IndexByte(tt.in, RecordSeparator) + 1
			}
			if resp != tt.want || n != tt.consumed {
				t.Fatalf("got %+v consumed %d, want %+v and %d", resp, n, tt.want, tt.consumed)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want HubProtocol
		ok   bool
	}{
		{"json", JSON, true},
		{"JSON", JSON, true},
		{"messagepack", MessagePack, true},
		{"MessagePack", MessagePack, true},
		{"blazorpack", nil, false},
		{"", nil, false},
	}
	for _, tt := range tests {
		p, ok := Lookup(tt.name)
		if ok != tt.ok || p != tt.want {
			t.Errorf("Lookup(%q) = %v, %v", tt.name, p, ok)
		}
	}
}
