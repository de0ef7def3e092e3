package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestBearerToken(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, header, query, want string
	}{
		{"header", "Bearer abc", "", "abc"},
		{"header any case", "bearer abc", "", "abc"},
		{"query", "", "access_token=q", "q"},
		{"header wins", "Bearer h", "access_token=q", "h"},
		{"other scheme", "Basic xyz", "access_token=q", ""},
		{"none", "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/?"+tc.query, nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if got := BearerToken(r); got != tc.want {
				t.Fatalf("BearerToken = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHS256(t *testing.T) {
	t.Parallel()
	if _, err := HS256(nil); err == nil {
		t.Fatal("an empty secret must be refused")
	}
	a, err := HS256([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Minute).Unix(), "role": "x"}).SignedString([]byte("k"))
	r := httptest.NewRequest(http.MethodGet, "/?access_token="+tok, nil)
	id, err := a.Authenticate(r)
	if err != nil || id.UserID != "u1" || id.Claims["role"] != "x" {
		t.Fatalf("Authenticate = %+v, %v", id, err)
	}
	// A token without exp is refused: long-lived bearer tokens are a risk.
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u1"}).SignedString([]byte("k"))
	r = httptest.NewRequest(http.MethodGet, "/?access_token="+noExp, nil)
	if _, err := a.Authenticate(r); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("token without exp: %v", err)
	}
}
