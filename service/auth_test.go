package service

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubfabric/hubfabric/backplane"
)

func TestRESTAuth(t *testing.T) {
	n := startNode(t, backplane.NewMemory(), NewMemoryStore(), nil)
	u := n.url + "/api/hubs/chat/:send" + v
	aud := n.url + "/api/hubs/chat/:send"
	exp := time.Now().Add(time.Hour).Unix()
	none := func() string {
		enc := base64.RawURLEncoding.EncodeToString
		h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
		c, _ := json.Marshal(map[string]any{"aud": aud, "exp": exp})
		return enc(h) + "." + enc(c) + "."
	}()
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{"aud": aud, "exp": exp}).SignedString([]byte(testKey))
	for _, tc := range []struct {
		name, authz string
		want        int
		why         string
	}{
		{"valid", "Bearer " + mint(t, testKey, jwt.MapClaims{"aud": aud, "exp": exp}), 202, ""},
		{"valid with the query in aud", "Bearer " + mint(t, testKey, jwt.MapClaims{"aud": u, "exp": exp}), 202, ""},
		{"second key (rotation)", "Bearer " + mint(t, "second-key-for-rotation", jwt.MapClaims{"aud": aud, "exp": exp}), 202, ""},
		{"missing", "", 401, "no bearer token"},
		{"not bearer", "Basic dXNlcjpwYXNz", 401, "not a Bearer token"},
		{"garbage", "Bearer not.a.jwt", 401, "malformed"},
		{"bad signature", "Bearer " + mint(t, "some-other-key", jwt.MapClaims{"aud": aud, "exp": exp}), 401, "signature is invalid"},
		{"wrong audience", "Bearer " + mint(t, testKey, jwt.MapClaims{"aud": n.url + "/api/hubs/other/:send", "exp": exp}), 401, "audience"},
		{"no audience", "Bearer " + mint(t, testKey, jwt.MapClaims{"exp": exp}), 401, "aud"},
		{"expired", "Bearer " + mint(t, testKey, jwt.MapClaims{"aud": aud, "exp": time.Now().Add(-time.Hour).Unix()}), 401, "expired"},
		{"no exp", "Bearer " + mint(t, testKey, jwt.MapClaims{"aud": aud}), 401, "exp"},
		{"alg none", "Bearer " + none, 401, "signing method"},
		{"alg HS512", "Bearer " + hs512, 401, "signing method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, text := callWith(t, "POST", u, body("msg", "x"), tc.authz)
			if got != tc.want {
				t.Fatalf("status %d, want %d: %s", got, tc.want, text)
			}
			if tc.want == 401 {
				var d ErrorDetail
				if err := json.Unmarshal([]byte(text), &d); err != nil || d.Code != "Error.Unauthorized" || !strings.Contains(d.Message, tc.why) {
					t.Fatalf("ErrorDetail %+v (%v), want code Error.Unauthorized and a message with %q", d, err, tc.why)
				}
			}
		})
	}
}

func TestClientAuth(t *testing.T) {
	n := startNode(t, backplane.NewMemory(), NewMemoryStore(), nil)
	neg := n.url + "/client/negotiate?hub=chat&negotiateVersion=1"
	aud := n.url + "/client/?hub=chat"
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name, authz string
		want        int
	}{
		{"valid", "Bearer " + mint(t, testKey, jwt.MapClaims{"aud": aud, "exp": exp, "nameid": "u"}), 200},
		{"long nameidentifier claim", "Bearer " + mint(t, testKey, jwt.MapClaims{"aud": aud, "exp": exp, claimNameIdentifier: "u"}), 200},
		{"missing", "", 401},
		{"bad signature", "Bearer " + mint(t, "wrong", jwt.MapClaims{"aud": aud, "exp": exp}), 401},
		{"wrong audience", "Bearer " + mint(t, testKey, jwt.MapClaims{"aud": n.url + "/client/?hub=other", "exp": exp}), 401},
		{"expired", "Bearer " + mint(t, testKey, jwt.MapClaims{"aud": aud, "exp": time.Now().Add(-time.Hour).Unix()}), 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, text := callWith(t, "POST", neg, "", tc.authz); got != tc.want {
				t.Fatalf("negotiate: status %d, want %d: %s", got, tc.want, text)
			}
		})
	}
	// The /hubs/NAME path takes the same tokens.
	tok := mint(t, testKey, jwt.MapClaims{"aud": n.url + "/hubs/chat", "exp": exp, "nameid": "u"})
	if got, text := callWith(t, "POST", n.url+"/hubs/chat/negotiate?negotiateVersion=1", "", "Bearer "+tok); got != 200 {
		t.Fatalf("/hubs/chat negotiate: %d %s", got, text)
	}
	if got, _ := callWith(t, "POST", n.url+"/client/negotiate?hub=nope", "", "Bearer "+tok); got != 404 {
		t.Fatalf("unknown hub on /client/: %d, want 404", got)
	}
}
