package service

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/proto"

	fabricv1 "github.com/hubfabric/hubfabric/proto/fabric/v1"
)

// FuzzServiceConnectionString: any text parses or fails, without panics,
// and an error never repeats the access key.
func FuzzServiceConnectionString(f *testing.F) {
	f.Add("Endpoint=http://localhost:8080;AccessKey=abc;Version=1.0;")
	f.Add("endpoint=https://h;accesskey=k;port=99")
	f.Add(";;=;Endpoint=")
	f.Fuzz(func(t *testing.T, s string) {
		cs, err := ParseConnectionString(s)
		if err == nil && (cs.Endpoint == "" || cs.AccessKey == "") {
			t.Fatalf("accepted %q without endpoint or key: %+v", s, cs)
		}
		if err != nil && len(cs.AccessKey) > 3 && strings.Contains(err.Error(), cs.AccessKey) {
			t.Fatalf("error repeats the key: %v", err)
		}
	})
}

// FuzzRESTRoute: any method and path map to an operation or a clear
// error; no name of an operation is empty where the path had one.
func FuzzRESTRoute(f *testing.F) {
	for _, p := range []string{"/api/hubs/chat/:send", "/api/v1/hubs/chat/groups/g/connections/c", "/api/hubs/chat/users/u/groups/g",
		"/api/hubs/chat/groups/%2e%2e/:send", "/api/hubfabric/hubs/chat/presence", "/api//", "/api/hubs"} {
		f.Add("POST", p)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		seg, e := segments(path)
		if e != nil {
			if e.status != http.StatusBadRequest {
				t.Fatalf("segments error status %d", e.status)
			}
			return
		}
		o, e := route(method, seg)
		if e == nil && o.name == "" {
			t.Fatalf("%s %q: no operation and no error", method, path)
		}
		if e != nil && e.msg == "" {
			t.Fatalf("%s %q: an error without a message", method, path)
		}
	})
}

// FuzzRESTBody: any body is a message or a 400/413 saying why.
func FuzzRESTBody(f *testing.F) {
	f.Add(`{"target":"m","arguments":[1,"a",{"b":[1.5,null,true]},12345678901234567890]}`)
	f.Add(`{"target":`)
	f.Add(`{"target":"m","arguments":{}}`)
	s, err := New(Config{AccessKeys: []string{"k"}, MaxBodyBytes: 512})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", "/api/hubs/chat/:send", strings.NewReader(body))
		target, _, e := s.readMessage(httptest.NewRecorder(), r)
		if e == nil && target == "" {
			t.Fatal("a message without a target")
		}
		if e != nil && e.status != 400 && e.status != 413 {
			t.Fatalf("status %d", e.status)
		}
	})
}

// FuzzServiceCommand: any backplane payload on a service channel is a
// command or dropped, without panics.
func FuzzServiceCommand(f *testing.F) {
	b, _ := proto.Marshal(&fabricv1.ServiceCommand{OriginNode: "n2", Hub: "chat", ConnectionIds: []string{"c1"}, Reason: "r"})
	f.Add(b)
	b, _ = proto.Marshal(&fabricv1.ServiceCommand{OriginNode: "n2", Hub: "nohub", All: true, ExcludedConnectionIds: []string{"x"}})
	f.Add(b)
	f.Add([]byte{0xff, 0x01})
	s, err := New(Config{AccessKeys: []string{"k"}})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	s.nodeID = "n1"
	s.local["chat"] = map[string]*localConn{"c1": {close: func(string) {}}}
	f.Fuzz(func(t *testing.T, payload []byte) {
		s.onCommand(channelAll, payload)
	})
}

// FuzzUpstreamResult: any upstream answer becomes a result, in both
// protocols, without panics.
func FuzzUpstreamResult(f *testing.F) {
	f.Add([]byte(`{"a":1}`), false)
	f.Add([]byte{0x92, 0x01, 0xa1, 'x'}, true)
	f.Add([]byte("plain text"), true)
	f.Fuzz(func(t *testing.T, data []byte, binary bool) {
		_, _ = resultOf(data, binary)
	})
}

// FuzzAccessToken: any bearer token is accepted only when signed with an
// access key (never alg none, never another key).
func FuzzAccessToken(f *testing.F) {
	good, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"aud": "http://h/api/hubs/chat", "exp": 4102444800}).SignedString([]byte("k"))
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.eyJhdWQiOiJodHRwOi8vaC9hcGkvaHVicy9jaGF0IiwiZXhwIjo0MTAyNDQ0ODAwfQ.")
	f.Add("a.b.c")
	v := newVerifier([]string{"k"}, "")
	f.Fuzz(func(t *testing.T, raw string) {
		claims, err := v.verify(raw, "http://h/api/hubs/chat")
		if err != nil {
			return
		}
		tok, _, perr := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{})
		if perr != nil || tok.Method.Alg() != "HS256" || claims == nil {
			t.Fatalf("accepted %q (alg %v, %v)", raw, tok, perr)
		}
	})
}
