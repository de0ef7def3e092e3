package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fuzzSecret is the key the fuzzed Authenticator checks tokens with.
var fuzzSecret = []byte("fuzz-secret")

// b64 is JWT's segment encoding.
var b64 = base64.RawURLEncoding

// signed returns header.claims signed with HMAC-SHA256 and key.
func signed(header, claims []byte, key []byte) string {
	input := b64.EncodeToString(header) + "." + b64.EncodeToString(claims)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(input))
	return input + "." + b64.EncodeToString(mac.Sum(nil))
}

// FuzzHS256 hands the HS256 Authenticator any token, as the Authorization
// header or the access_token query parameter: the raw string, or a token
// built from any header and claims JSON and signed with the right key, a
// wrong key, or not at all (alg "none" style). It must never panic, and
// what it accepts is checked here independently of the JWT library: three
// segments, a header whose alg is exactly HS256, a signature that is the
// HMAC of the first two segments with the secret, a numeric exp not in the
// past (30 s leeway), an nbf (if any) not in the future, a non-empty
// string sub that is the identity's user id.
func FuzzHS256(f *testing.F) {
	now := time.Now().Unix()
	hs := []byte(`{"alg":"HS256","typ":"JWT"}`)
	claims := func(extra string) []byte {
		return []byte(`{"sub":"u1","exp":` + itoa(now+600) + extra + `}`)
	}
	for _, c := range []struct {
		raw            string
		header, claims []byte
		mode           uint8
	}{
		{"", hs, claims(""), 1},                                           // valid
		{"", hs, claims(""), 2},                                           // wrong key
		{"", []byte(`{"alg":"none"}`), claims(""), 3},                     // unsigned
		{"", []byte(`{"alg":"none"}`), claims(""), 1},                     // alg none, signed anyway
		{"", []byte(`{"alg":"HS512"}`), claims(""), 1},                    // another HMAC
		{"", []byte(`{"alg":"RS256"}`), claims(""), 1},                    // key confusion
		{"", hs, []byte(`{"sub":"u1","exp":` + itoa(now-3600) + `}`), 1},  // expired
		{"", hs, []byte(`{"sub":"u1"}`), 1},                               // no exp
		{"", hs, []byte(`{"sub":"","exp":` + itoa(now+600) + `}`), 1},     // empty sub
		{"", hs, []byte(`{"sub":7,"exp":` + itoa(now+600) + `}`), 1},      // sub not a string
		{"", hs, claims(`,"nbf":` + itoa(now+3600)), 1},                   // not yet valid
		{"", hs, []byte(`{"sub":"u1","exp":"` + itoa(now+600) + `"}`), 1}, // exp a string
		{"", hs, claims(`,"sub":"u2"`), 5},                                // duplicate key, in the query
		{"a.b.c", nil, nil, 0},
		{"..", nil, nil, 4},
		{"Bearer x", nil, nil, 0},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.", nil, nil, 0},
	} {
		f.Add(c.raw, c.header, c.claims, c.mode)
	}
	a, err := HS256(fuzzSecret)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string, header, claims []byte, mode uint8) {
		token := raw
		switch mode % 4 {
		case 1:
			token = signed(header, claims, fuzzSecret)
		case 2:
			token = signed(header, claims, []byte("another secret"))
		case 3:
			token = b64.EncodeToString(header) + "." + b64.EncodeToString(claims) + "."
		}
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/hubs/chat"}, Header: http.Header{}}
		if mode&4 == 0 {
			r.Header.Set("Authorization", "Bearer "+token)
		} else {
			r.URL.RawQuery = "access_token=" + url.QueryEscape(token)
		}
		id, err := a.Authenticate(r)
		if err != nil {
			return
		}
		why := acceptable(token, time.Now().Unix())
		if why != "" {
			t.Fatalf("accepted token %q (user %q): %s", token, id.UserID, why)
		}
		var c struct{ Sub any }
		seg := strings.Split(token, ".")
		body, _ := b64.DecodeString(seg[1])
		if json.Unmarshal(body, &c) != nil || c.Sub != id.UserID {
			t.Fatalf("accepted token %q as user %q, but its sub is %#v", token, id.UserID, c.Sub)
		}
	})
}

// acceptable says why token must not be accepted at unix time now, or "".
func acceptable(token string, now int64) string {
	seg := strings.Split(strings.TrimSpace(token), ".")
	if len(seg) != 3 {
		return "not three segments"
	}
	header, err1 := b64.DecodeString(seg[0])
	body, err2 := b64.DecodeString(seg[1])
	sig, err3 := b64.DecodeString(seg[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return "a segment is not base64url"
	}
	var h struct{ Alg any }
	if json.Unmarshal(header, &h) != nil || h.Alg != "HS256" {
		return "alg is not HS256"
	}
	mac := hmac.New(sha256.New, fuzzSecret)
	mac.Write([]byte(seg[0] + "." + seg[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return "not signed with the secret"
	}
	var c map[string]any
	if json.Unmarshal(body, &c) != nil {
		return "claims are not a JSON object"
	}
	// 2 s of slack on top of the 30 s leeway: the clock moved since Authenticate.
	if exp, ok := c["exp"].(float64); !ok || exp < float64(now-32) {
		return "no numeric exp, or expired"
	}
	if nbf, ok := c["nbf"]; ok {
		if v, ok := nbf.(float64); !ok || v > float64(now+32) {
			return "nbf in the future or not a number"
		}
	}
	if sub, ok := c["sub"].(string); !ok || sub == "" {
		return "no string sub"
	}
	return ""
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
