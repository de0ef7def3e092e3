package transport

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCheckOrigin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		origin   string
		patterns []string
		cross    bool
		ok       bool
	}{
		{"", nil, false, true},
		{"http://node.test", nil, false, true}, // same host as the request
		{"https://app.example.com", []string{"*.example.com"}, true, true},
		{"https://APP.example.com:8443", []string{"*.example.com:8443"}, true, true},
		{"https://app.example.com", []string{"https://*.example.com"}, true, true},
		{"http://app.example.com", []string{"https://*.example.com"}, false, false},
		{"http://evil.com?.example.com", []string{"*.example.com"}, false, false},
		{"http://evil.com?.example.com", []string{"*"}, false, false},
		{"http://evil.com/x.example.com", []string{"*.example.com"}, false, false},
		{"http://u:p@app.example.com", []string{"*.example.com"}, false, false},
		{"ws://app.example.com", []string{"*.example.com"}, false, false},
		{"null", []string{"*"}, false, false},
		{"app.example.com", []string{"*.example.com"}, false, false},
	} {
		r := httptest.NewRequest("GET", "http://node.test/hubs/chat", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		cross, err := checkOrigin(r, tc.patterns)
		if (err == nil) != tc.ok || cross != tc.cross {
			t.Errorf("checkOrigin(%q, %q) = %v, %v; want cross %v, allowed %v", tc.origin, tc.patterns, cross, err, tc.cross, tc.ok)
		}
	}
}

// Negotiate reads at most maxNegotiateBody of a body; a longer one, by its
// Content-Length or chunked, is refused with 413 rather than read.
func TestNegotiateBodyLimit(t *testing.T) {
	t.Parallel()
	srv, _ := limitServer(t, 32<<10)
	for _, tc := range []struct {
		name    string
		body    io.Reader
		chunked bool
		want    int
	}{
		{"no body", nil, false, http.StatusOK},
		{"small body", strings.NewReader("hello"), false, http.StatusOK},
		{"large body", strings.NewReader(strings.Repeat("x", 100<<10)), false, http.StatusRequestEntityTooLarge},
		{"large chunked body", strings.NewReader(strings.Repeat("x", 100<<10)), true, http.StatusRequestEntityTooLarge},
	} {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/hubs/chat/negotiate?negotiateVersion=1", tc.body)
		if err != nil {
			t.Fatal(err)
		}
		if tc.chunked {
			req.ContentLength = -1
			req.Body = io.NopCloser(tc.body) // hides the length, so it is sent chunked
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: negotiate = %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
}
