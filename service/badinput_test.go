package service

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/hubfabric/hubfabric/backplane"
)

func TestRESTBadInput(t *testing.T) {
	n := startNode(t, backplane.NewMemory(), NewMemoryStore(), func(c *Config) { c.MaxBodyBytes = 4096 })
	alice := connect(t, n, "alice", "json")
	api := n.url + "/api/hubs/chat"
	g1024, g1025 := strings.Repeat("g", 1024), strings.Repeat("g", 1025)
	for _, tc := range []struct {
		name, method, url, body string
		want                    int
		code, why               string
	}{
		{"malformed JSON", "POST", api + "/:send" + v, `{"target":`, 400, "Error.BadRequest", "not a JSON object"},
		{"not an object", "POST", api + "/:send" + v, `[1,2]`, 400, "Error.BadRequest", "not a JSON object"},
		{"no target", "POST", api + "/:send" + v, `{"arguments":[1]}`, 400, "Error.BadRequest", "no \"target\""},
		{"arguments not a list", "POST", api + "/:send" + v, `{"target":"m","arguments":{"a":1}}`, 400, "Error.BadRequest", "not a JSON object"},
		{"huge body", "POST", api + "/:send" + v, body("msg", strings.Repeat("x", 5000)), 413, "Error.PayloadTooLarge", "over 4096 bytes"},
		{"unknown hub", "POST", n.url + "/api/hubs/nohub/:send" + v, body("msg", "x"), 404, "Error.Hub.NotExisted", "not served"},
		{"group name at the limit", "POST", api + "/groups/" + g1024 + "/:send" + v, body("msg", "x"), 202, "", ""},
		{"group name over the limit", "POST", api + "/groups/" + g1025 + "/:send" + v, body("msg", "x"), 400, "Error.BadRequest", "the limit is 1024"},
		{"group join over the limit", "PUT", api + "/groups/" + g1025 + "/connections/" + alice.conn.ConnectionID() + v, "", 400, "Error.BadRequest", "the limit is 1024"},
		{"connection id over the limit", "HEAD", api + "/connections/" + strings.Repeat("c", 1025) + v, "", 400, "", ""},
		{"dot-dot segment", "POST", api + "/groups/%2e%2e/:send" + v, body("msg", "x"), 400, "Error.BadRequest", "'..'"},
		// ServeMux cleans "//" away first: a group named ":send" takes no POST.
		{"empty segment", "POST", api + "/groups//:send" + v, body("msg", "x"), 405, "Error.MethodNotAllowed", "allowed: GET, HEAD"},
		{"unknown operation", "POST", api + "/frobnicate" + v, body("msg", "x"), 404, "Error.NotFound", "no REST operation"},
		{"wrong method", "GET", api + "/:send" + v, "", 405, "Error.MethodNotAllowed", "allowed: POST"},
		{"unknown api-version", "POST", api + "/:send?api-version=1999-01-01", body("msg", "x"), 400, "Error.BadRequest", "api-version"},
		{"bad ttl", "PUT", api + "/users/u/groups/g" + v + "&ttl=soon", "", 400, "Error.BadRequest", "ttl"},
		{"negative ttl", "PUT", api + "/users/u/groups/g" + v + "&ttl=-5", "", 400, "Error.BadRequest", "ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, text := call(t, tc.method, tc.url, tc.body)
			if got != tc.want {
				t.Fatalf("status %d, want %d: %s", got, tc.want, text)
			}
			if tc.code == "" {
				return
			}
			var d ErrorDetail
			if err := json.Unmarshal([]byte(text), &d); err != nil || d.Code != tc.code || !strings.Contains(d.Message, tc.why) {
				t.Fatalf("ErrorDetail %+v (%v), want code %s and a message with %q", d, err, tc.code, tc.why)
			}
		})
	}
	// A group name with a '/' (escaped) is one name, not a path trick.
	expect(t, "PUT", api+"/groups/a%2Fb/connections/"+alice.conn.ConnectionID()+v, "", 200)
	expect(t, "POST", api+"/groups/a%2Fb/:send"+v, body("msg", "slash"), 202)
	alice.want(t, "slash")
	// After all that, the node still serves the client.
	expect(t, "POST", api+"/:send"+v, body("msg", "alive"), 202)
	alice.want(t, "alive")
	// The client endpoint: unknown hub, unknown path.
	for _, p := range []string{"/client/?hub=nohub", "/client/negotiate?hub=", "/client/extra/negotiate?hub=chat"} {
		resp, err := http.Post(n.url+p, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("POST %s: %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestParseConnectionString(t *testing.T) {
	cs, err := ParseConnectionString("Endpoint=http://localhost:8080;AccessKey=abc;Version=1.0;")
	if err != nil || cs.Endpoint != "http://localhost:8080" || cs.AccessKey != "abc" {
		t.Fatalf("got %+v, %v", cs, err)
	}
	cs, err = ParseConnectionString("endpoint=https://svc.example.com/;accesskey=k;port=8443")
	if err != nil || cs.Endpoint != "https://svc.example.com:8443" {
		t.Fatalf("with Port: %+v, %v", cs, err)
	}
	for in, why := range map[string]string{
		"AccessKey=abc;Version=1.0;":                     "Endpoint is missing",
		"Endpoint=http://h:1;Version=1.0;":               "AccessKey is missing",
		"Endpoint=http://h:1;AccessKey=secret;Version=2": "Version",
		"Endpoint=ftp://h;AccessKey=secret":              "want http(s)",
		"Endpoint=http://h/path;AccessKey=secret":        "without path",
		"Endpoint=http://h;AccessKey=secret;Foo=1":       "unknown key \"Foo\"",
		"Endpoint=http://h;AccessKey=secret;bare":        "not key=value",
	} {
		_, err := ParseConnectionString(in)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: error %v, want one with %q", in, err, why)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: the error repeats the access key: %v", in, err)
		}
	}
}
