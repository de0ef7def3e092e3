package transport

import (
	"net/http/httptest"
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
