package protocol

import (
	"reflect"
	"strings"
	"testing"
)

var defaultTransports = []AvailableTransport{
	{Transport: "WebSockets", TransferFormats: []string{"Text", "Binary"}},
	{Transport: "ServerSentEvents", TransferFormats: []string{"Text"}},
	{Transport: "LongPolling", TransferFormats: []string{"Text", "Binary"}},
}

const transportsJSON = `"availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]},{"transport":"ServerSentEvents","transferFormats":["Text"]},{"transport":"LongPolling","transferFormats":["Text","Binary"]}]`

func TestAppendNegotiateResponse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    NegotiateResponse
		want string
	}{
		{"v1", NegotiateResponse{NegotiateVersion: 1, ConnectionID: "id", ConnectionToken: "tok", AvailableTransports: defaultTransports},
			`{"negotiateVersion":1,"connectionId":"id","connectionToken":"tok",` + transportsJSON + `}`},
		{"v1 stateful", NegotiateResponse{UseStatefulReconnect: true, NegotiateVersion: 1, ConnectionID: "id", ConnectionToken: "tok", AvailableTransports: defaultTransports[:1]},
			`{"useStatefulReconnect":true,"negotiateVersion":1,"connectionId":"id","connectionToken":"tok","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}`},
		{"v0 omits token", NegotiateResponse{ConnectionID: "id", ConnectionToken: "tok"},
			`{"negotiateVersion":0,"connectionId":"id","availableTransports":[]}`},
		{"redirect", NegotiateResponse{NegotiateVersion: 1, URL: "https://x/y", AccessToken: "a\"b", ConnectionID: "id", ConnectionToken: "tok", AvailableTransports: []AvailableTransport{{Transport: "LongPolling"}}},
			`{"negotiateVersion":1,"url":"https://x/y","accessToken":"a\"b","connectionId":"id","connectionToken":"tok","availableTransports":[{"transport":"LongPolling","transferFormats":[]}]}`},
		{"error form", NegotiateResponse{NegotiateVersion: 1, ConnectionID: "id", Error: "The client requested a non-integer protocol version."},
			`{"error":"The client requested a non-integer protocol version."}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bytesEqual(t, tt.name, AppendNegotiateResponse(nil, tt.r), []byte(tt.want))
		})
	}
}

func TestParseNegotiateResponse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    NegotiateResponse
		errText string
	}{
		{"v1", `{"negotiateVersion":1,"connectionId":"id","connectionToken":"tok",` + transportsJSON + `}`,
			NegotiateResponse{NegotiateVersion: 1, ConnectionID: "id", ConnectionToken: "tok", AvailableTransports: defaultTransports}, ""},
		{"v0 token is id", `{"connectionId":"id","connectionToken":"ignored","availableTransports":[]}`,
			NegotiateResponse{ConnectionID: "id", ConnectionToken: "id", AvailableTransports: []AvailableTransport{}}, ""},
		{"stateful, redirect, unknown and null properties", `{"useStatefulReconnect":true,"negotiateVersion":1,"url":"u","accessToken":"a","connectionId":null,"x":[1],"ConnectionId":"wrong case"}`,
			NegotiateResponse{UseStatefulReconnect: true, NegotiateVersion: 1, URL: "u", AccessToken: "a"}, ""},
		{"error", `{"error":"nope"}`, NegotiateResponse{Error: "nope"}, ""},
		{"falsy ProtocolVersion", `{"ProtocolVersion":null,"negotiateVersion":1,"connectionToken":"t"}`, NegotiateResponse{NegotiateVersion: 1, ConnectionToken: "t"}, ""},
		{"old ASP.NET server", `{"Url":"/signalr","ConnectionToken":"x","ConnectionId":"y","ProtocolVersion":"1.5"}`, NegotiateResponse{}, "ASP.NET SignalR Server"},
		{"not JSON", `<html>`, NegotiateResponse{}, "invalid JSON"},
		{"empty", ``, NegotiateResponse{}, "empty record"},
		{"not an object", `[]`, NegotiateResponse{}, "expected a JSON object"},
		{"bad negotiateVersion", `{"negotiateVersion":"1"}`, NegotiateResponse{}, `"negotiateVersion"`},
		{"bad useStatefulReconnect", `{"useStatefulReconnect":"true"}`, NegotiateResponse{}, `"useStatefulReconnect"`},
		{"bad transports", `{"availableTransports":{}}`, NegotiateResponse{}, `"availableTransports"`},
		{"bad error", `{"error":5}`, NegotiateResponse{}, `"error"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseNegotiateResponse([]byte(tt.in))
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r, tt.want) {
				t.Fatalf("got %+v\nwant %+v", r, tt.want)
			}
		})
	}
	// Round trip.
	in := NegotiateResponse{UseStatefulReconnect: true, NegotiateVersion: 1, URL: "u", AccessToken: "a", ConnectionID: "i", ConnectionToken: "t", AvailableTransports: defaultTransports}
	out, err := ParseNegotiateResponse(AppendNegotiateResponse(nil, in))
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v %v", out, err)
	}
}

func TestParseNegotiateVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v       string
		present bool
		want    int
		err     string
	}{
		{"", false, 0, ""},
		{"0", true, 0, ""},
		{"1", true, 1, ""},
		{"2", true, 1, ""},
		{"2147483647", true, 1, ""},
		{" 1 ", true, 1, ""},
		{"+1", true, 1, ""},
		{"", true, 0, "The client requested a non-integer protocol version."},
		{"1.0", true, 0, "The client requested a non-integer protocol version."},
		{"abc", true, 0, "The client requested a non-integer protocol version."},
		{"1,1", true, 0, "The client requested a non-integer protocol version."},
		{"2147483648", true, 0, "The client requested a non-integer protocol version."},
		{"-1", true, 0, "The client requested version '-1', but the server does not support this version."},
		{"-2147483648", true, 0, "The client requested version '-2147483648', but the server does not support this version."},
	}
	for _, tt := range tests {
		got, err := ParseNegotiateVersion(tt.v, tt.present)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%q: err = %v, want %q", tt.v, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: got %d, %v; want %d", tt.v, got, err, tt.want)
		}
	}
}
