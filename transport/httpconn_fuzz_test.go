package transport

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/protocol"
)

type discardSession struct{}

func (discardSession) Receive(protocol.Message) {}
func (discardSession) Closed(error)             {}

// FuzzHTTPSend POSTs any body to a long-polling connection, as its
// handshake (handshaken false) or after a JSON or MessagePack handshake:
// the answer is always 200 (a bad handshake or message is answered in
// the connection's polls) or 413, the server does not panic, and a
// DELETE then ends the connection (202).
func FuzzHTTPSend(f *testing.F) {
	f.Add([]byte(`{"protocol":"json","version":1}`+rs), false, false)
	f.Add([]byte(`{"type":1,"target":"x","arguments":[]}`+rs), true, false)
	f.Add([]byte{0x05, 0x94, 0x01, 0x80, 0xc0, 0xa1}, true, true)
	f.Add([]byte(`{"protocol":"messagepack","version":1}`+rs+"\x01"), false, true)
	f.Add([]byte("\xff\xfe"+rs), false, false)
	opts := testOptions(func(context.Context, ConnectRequest) (Session, error) { return discardSession{}, nil })
	opts.MaxMessageSize = 4096
	s, err := NewServer(opts)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		s.StopAccepting()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Wait(ctx); err != nil {
			f.Errorf("Wait: %v", err)
		}
	})
	serve := func(method, token string, body []byte) int {
		r := &http.Request{Method: method, URL: &url.URL{Path: "/hubs/chat", RawQuery: "id=" + token},
			Host: "node.test", Header: http.Header{}, Body: http.NoBody}
		if body != nil {
			r.Body = httpBody(body)
			r.ContentLength = int64(len(body))
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r.WithContext(context.Background()))
		return w.Code
	}
	f.Fuzz(func(t *testing.T, body []byte, handshaken, binary bool) {
		tok, _ := s.tokens.mint(false, "")
		if got := serve(http.MethodGet, tok, nil); got != http.StatusOK {
			t.Fatalf("first poll: %d", got)
		}
		if handshaken {
			hs := `{"protocol":"json","version":1}` + rs
			if binary {
				hs = `{"protocol":"messagepack","version":1}` + rs
			}
			if got := serve(http.MethodPost, tok, []byte(hs)); got != http.StatusOK {
				t.Fatalf("handshake: %d", got)
			}
		}
		if got := serve(http.MethodPost, tok, body); got != http.StatusOK && got != http.StatusRequestEntityTooLarge {
			t.Fatalf("POST %q: %d", body, got)
		}
		if got := serve(http.MethodDelete, tok, nil); got != http.StatusAccepted {
			t.Fatalf("DELETE after POST %q: %d", body, got)
		}
	})
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func httpBody(b []byte) readCloser { return readCloser{bytes.NewReader(b)} }
