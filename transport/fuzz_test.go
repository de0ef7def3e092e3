package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/internal/conn"
	"github.com/hubfabric/hubfabric/internal/seam"
	"github.com/hubfabric/hubfabric/protocol"
)

// fakeSocket records the frames a connection writes; safe for concurrent use.
type fakeSocket struct {
	mu     sync.Mutex
	frames [][]byte
}

func (s *fakeSocket) WriteFrame(_ context.Context, frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames = append(s.frames, bytes.Clone(frame))
	return nil
}
func (s *fakeSocket) Close() error    { return nil }
func (s *fakeSocket) CloseNow() error { return nil }

// collectSession keeps what a connection receives; only the reader calls
// Receive, and it is read after the reader returned.
type collectSession struct{ got []protocol.Message }

func (s *collectSession) Receive(m protocol.Message) { s.got = append(s.got, m) }
func (s *collectSession) Closed(error)               {}

// chunkReader returns data in reads of the given sizes (cycled, each at
// least 1), as a WebSocket frame's reader may.
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(r.sizes) > 0 {
		n = min(n, 1+int(r.sizes[r.i%len(r.sizes)]))
		r.i++
	}
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data = r.data[n:]
	return n, nil
}

// readResult is what the reader made of one client's bytes.
type readResult struct {
	msgs    []protocol.Message
	pending []byte // the partial record left after the last frame
	err     error
	closeMs []protocol.Message // what the connection wrote after its handshake answer (it ends with a Close)
}

// readFrames reads frames as readLoop does (each frame's reader, the
// partial record carried to the next) on a connection of p, and returns
// what was delivered and written.
func readFrames(t *testing.T, s *Server, p protocol.HubProtocol, frames [][]byte, sizes []byte) readResult {
	t.Helper()
	sock := &fakeSocket{}
	sess := &collectSession{}
	c, err := conn.Open(context.Background(), sock, conn.Options{
		ID: "fuzz", Protocol: p, MaxOutboundBytes: 1 << 20, KeepAlive: time.Hour, ClientTimeout: time.Hour, Runtime: seam.Real{},
	}, func(context.Context, *conn.Conn) (conn.Session, error) { return sess, nil })
	if err != nil {
		t.Fatal(err)
	}
	var res readResult
	var pending []byte
	for _, f := range frames {
		buf, err := s.readFrame(&chunkReader{data: f, sizes: sizes}, c, sess, bytes.Clone(pending))
		if err != nil {
			res.err = err
			break
		}
		pending = bytes.Clone(buf)
	}
	c.End(res.err)
	c.Wait()
	res.msgs, res.pending = sess.got, pending
	sock.mu.Lock()
	defer sock.mu.Unlock()
	// Frames may be coalesced: what matters is the byte stream.
	written, ok := bytes.CutPrefix(bytes.Join(sock.frames, nil), protocol.AppendHandshakeResponse(nil, ""))
	if !ok {
		t.Fatalf("the connection wrote %q, not starting with the handshake answer", bytes.Join(sock.frames, nil))
	}
	if res.closeMs, _, err = p.ParseMessages(written, 0); err != nil {
		t.Fatalf("the connection wrote %q: %v", written, err)
	}
	return res
}

// FuzzReadFrame: however a client's bytes are cut into WebSocket frames,
// and however each frame's reads are chunked, the connection receives the
// same messages as from one frame read whole, and the same as parsing the
// bytes at once gives (Pings aside); the same partial record is left over.
// A record over MaxMessageSize, or a malformed one, always ends the
// connection with one Close message saying why, and nothing after it is
// delivered.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte("{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"hi\"]}\x1e{\"type\":6}\x1e{\"type\":1,"), []byte{3, 50}, []byte{0, 1}, false)
	f.Add(hexBytes(f, "0f960180c0a548656c6c6f91a2686990029106"), []byte{1, 4}, []byte{0}, true)
	f.Add([]byte("{\"type\":1,\"target\":\""+strings.Repeat("x", 300)+"\",\"arguments\":[]}\x1e"), []byte{100}, []byte{7, 200}, false)
	f.Add(append([]byte{0xff, 0x7f}, bytes.Repeat([]byte{0x91}, 40)...), []byte{0}, []byte{0}, true)
	f.Add([]byte("{\"type\":1}\x1e{\"type\":6}\x1e"), []byte{2}, []byte{}, false)
	f.Add([]byte("\xff\x1e"), []byte{}, []byte{}, false)
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x10}, []byte{1}, []byte{0}, true)
	opts := testOptions(nil)
	opts.MaxMessageSize = 256
	s := &Server{opts: opts}
	f.Fuzz(func(t *testing.T, data, cuts, sizes []byte, binary bool) {
		p := protocol.HubProtocol(protocol.JSON)
		if binary {
			p = protocol.MessagePack
		}
		var frames [][]byte
		rest := data
		for _, c := range cuts {
			n := min(int(c), len(rest))
			frames, rest = append(frames, rest[:n]), rest[n:]
		}
		frames = append(frames, rest)
		whole := readFrames(t, s, p, [][]byte{data}, nil)
		cut := readFrames(t, s, p, frames, sizes)
		if !reflect.DeepEqual(cut.msgs, whole.msgs) || (cut.err == nil) != (whole.err == nil) ||
			(whole.err == nil && !bytes.Equal(cut.pending, whole.pending)) {
			t.Fatalf("frames %q (reads %v) gave %d messages, err %v, pending %q; one frame gave %d, err %v, pending %q",
				frames, sizes, len(cut.msgs), cut.err, cut.pending, len(whole.msgs), whole.err, whole.pending)
		}
		msgs, n, perr := p.ParseMessages(data, opts.MaxMessageSize)
		var want []protocol.Message
		for _, m := range msgs {
			if _, ping := m.(*protocol.Ping); !ping {
				want = append(want, m)
			}
		}
		if !reflect.DeepEqual(whole.msgs, want) || (perr == nil) != (whole.err == nil) || (perr == nil && !bytes.Equal(whole.pending, data[n:])) {
			t.Fatalf("one frame %q gave %d messages, err %v; parsing it gives %d, err %v", data, len(whole.msgs), whole.err, len(want), perr)
		}
		for _, r := range []readResult{whole, cut} {
			cl, ok := (*protocol.Close)(nil), len(r.closeMs) == 1
			if ok {
				cl, ok = r.closeMs[0].(*protocol.Close)
			}
			if r.err == nil {
				// The client's normal end: the server's own Close, without an error.
				if !ok || cl.Error != "" {
					t.Fatalf("no error, yet the connection wrote %#v", r.closeMs)
				}
				continue
			}
			tooLarge := strings.Contains(cl.Error, protocol.ErrMessageTooLarge.Error())
			switch {
			case !ok || cl.AllowReconnect || cl.Error != r.err.Error():
				t.Fatalf("error %v (parse error %v): the connection wrote %#v, want one Close saying it", r.err, perr, r.closeMs)
			case tooLarge != errors.Is(perr, protocol.ErrMessageTooLarge):
				t.Fatalf("Close %q, but parsing the bytes at once fails with %v", cl.Error, perr)
			case tooLarge && !strings.Contains(cl.Error, "limit 256"):
				t.Fatalf("oversized record: Close %q does not name the limit", cl.Error)
			case !tooLarge && !strings.Contains(cl.Error, perr.Error()):
				t.Fatalf("Close %q, but parsing the bytes at once fails with %v", cl.Error, perr)
			}
		}
	})
}

// hexBytes decodes s, ignoring spaces.
func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	var out []byte
	s = strings.ReplaceAll(s, " ", "")
	for i := 0; i+1 < len(s); i += 2 {
		var b byte
		for _, c := range s[i : i+2] {
			b <<= 4
			switch {
			case c >= '0' && c <= '9':
				b |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				b |= byte(c - 'a' + 10)
			default:
				t.Fatalf("bad hex %q", s)
			}
		}
		out = append(out, b)
	}
	return out
}

// asciiUpper upper-cases ASCII letters only.
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// FuzzCheckOrigin: for any Origin header, request Host and allowed
// pattern, what checkOrigin allows is a browser's origin (scheme://host,
// http or https, no userinfo, path, query or fragment), same-host when not
// cross-origin, matching the pattern when cross-origin; and the verdict
// does not depend on ASCII case.
func FuzzCheckOrigin(f *testing.F) {
	for _, c := range [][3]string{
		{"https://app.example.com", "node.test", "*.example.com"},
		{"http://node.test", "node.test", ""},
		{"http://NODE.test:80", "node.test:80", "x"},
		{"https://app.example.com", "node.test", "https://*.example.com"},
		{"http://evil.com?.example.com", "node.test", "*"},
		{"http://evil.com#.example.com", "node.test", "*.example.com"},
		{"http://u@app.example.com", "node.test", "*"},
		{"http://[::1]:80", "[::1]:80", ""},
		{"http://a%2eb", "node.test", "a.b"},
		{"null", "node.test", "*"},
		{"", "node.test", ""},
		{"http://app.example.com/", "node.test", "*.example.com"},
		{"HTTP://app.example.com", "node.test", "http://*"},
	} {
		f.Add(c[0], c[1], c[2])
	}
	f.Fuzz(func(t *testing.T, origin, host, pattern string) {
		check := func(origin string) (bool, error) {
			r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/hubs/chat"}, Host: host, Header: http.Header{}}
			if origin != "" {
				r.Header.Set("Origin", origin)
			}
			var patterns []string
			if pattern != "" {
				patterns = []string{pattern}
			}
			return checkOrigin(r, patterns)
		}
		cross, err := check(origin)
		if err != nil && cross {
			t.Fatalf("checkOrigin(%q) refused but reports cross-origin", origin)
		}
		if cross2, err2 := check(asciiUpper(origin)); cross2 != cross || (err2 == nil) != (err == nil) {
			t.Fatalf("checkOrigin(%q) = %v, %v but upper-cased %v, %v", origin, cross, err, cross2, err2)
		}
		if err != nil || origin == "" {
			return
		}
		scheme, h, ok := strings.Cut(origin, "://")
		scheme = strings.ToLower(scheme)
		if !ok || (scheme != "http" && scheme != "https") || h == "" || strings.ContainsAny(h, "/?#@\\") {
			t.Fatalf("checkOrigin allowed %q: not scheme://host", origin)
		}
		u, _ := url.Parse(origin)
		switch {
		case !cross && !strings.EqualFold(u.Host, host):
			t.Fatalf("checkOrigin allowed %q (host %q) as same-origin for Host %q", origin, u.Host, host)
		case cross && !matchesOrigin(pattern, scheme, u.Host):
			t.Fatalf("checkOrigin allowed %q (host %q) as cross-origin; pattern %q does not match it", origin, u.Host, pattern)
		}
	})
}

// matchesOrigin is the pattern rule restated: path.Match on lower case,
// against scheme://host when the pattern has "://".
func matchesOrigin(pattern, scheme, host string) bool {
	target := host
	if strings.Contains(pattern, "://") {
		target = scheme + "://" + host
	}
	ok, err := matchOrigin(pattern, target)
	return ok && err == nil
}

// integer is what .NET's int.TryParse accepts once trimmed.
var integer = regexp.MustCompile(`^[+-]?[0-9]+$`)

// FuzzNegotiate sends negotiate any query string: the answer is always
// 200 with a negotiate response; the version is ASP.NET's reading of
// negotiateVersion (missing 0, non-integers and negatives an error,
// above 1 answered with 1); stateful reconnect is never offered, whatever
// useStatefulReconnect says; and the connection token (v1) or id (v0)
// handed out is one this server accepts for the connection id it named.
func FuzzNegotiate(f *testing.F) {
	for _, q := range []string{"negotiateVersion=1", "negotiateVersion=0", "", "negotiateVersion=-1", "negotiateVersion=%201%20",
		"negotiateVersion=2147483648", "negotiateVersion=x", "negotiateVersion=1&useStatefulReconnect=true", "negotiateVersion=+7",
		"negotiateVersion", "negotiateVersion=1&negotiateVersion=0", "%zz&negotiateVersion=1", "negotiateVersion=1;a=b", "negotiateVersion=-0"} {
		f.Add(q)
	}
	opts := testOptions(func(context.Context, ConnectRequest) (Session, error) { return nil, errors.New("no connections here") })
	s, err := NewServer(opts)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, query string) {
		r := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: "/hubs/chat/negotiate", RawQuery: query},
			Host: "node.test", Header: http.Header{}, Body: http.NoBody}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("negotiate?%s = %d %q", query, w.Code, w.Body.Bytes())
		}
		resp, err := protocol.ParseNegotiateResponse(w.Body.Bytes())
		if err != nil {
			t.Fatalf("negotiate?%s answered %q: %v", query, w.Body.Bytes(), err)
		}
		if resp.UseStatefulReconnect {
			t.Fatalf("negotiate?%s offered stateful reconnect, which this server does not do", query)
		}
		q, _ := url.ParseQuery(query)
		want, wantErr := 0, ""
		if vs, ok := q["negotiateVersion"]; ok {
			v := strings.TrimSpace(vs[0])
			n, isInt := new(big.Int).SetString(strings.TrimPrefix(v, "+"), 10)
			switch {
			case !integer.MatchString(v) || !isInt || !n.IsInt64() || n.Int64() > 1<<31-1 || n.Int64() < -1<<31:
				wantErr = "The client requested a non-integer protocol version."
			case n.Sign() < 0:
				wantErr = "The client requested version '" + n.String() + "', but the server does not support this version."
			case n.Sign() > 0:
				want = 1
			}
		}
		if resp.Error != wantErr || (wantErr == "" && resp.NegotiateVersion != want) {
			t.Fatalf("negotiate?%s = version %d, error %q; want version %d, error %q", query, resp.NegotiateVersion, resp.Error, want, wantErr)
		}
		if wantErr != "" {
			return
		}
		token := resp.ConnectionToken
		if want == 0 {
			token = resp.ConnectionID // legacy clients connect with the id
		}
		if resp.ConnectionID == "" || token == "" || (want == 1 && token == resp.ConnectionID) {
			t.Fatalf("negotiate?%s gave id %q and token %q", query, resp.ConnectionID, resp.ConnectionToken)
		}
		id, err := s.tokens.claim(token, "")
		if err != nil || id != resp.ConnectionID {
			t.Fatalf("the token negotiate handed out claims %q, %v; want connection id %q", id, err, resp.ConnectionID)
		}
		s.tokens.release(token)
	})
}
