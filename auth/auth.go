// Package auth identifies the user behind a SignalR request. An
// Authenticator looks at the negotiate and WebSocket requests; HS256 is the
// built-in JWT implementation.
package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Identity is who a connection belongs to. UserID is empty for anonymous
// connections, which then cannot be addressed with Clients.User.
type Identity struct {
	UserID string
	Claims map[string]any
}

// Authenticator identifies the caller of an HTTP request. It returns an
// error wrapping ErrUnauthorized when the request must be refused with 401.
// It is called concurrently, once for negotiate and once for the WebSocket
// request of every connection.
type Authenticator interface {
	Authenticate(r *http.Request) (Identity, error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(r *http.Request) (Identity, error)

// Authenticate calls f(r).
func (f AuthenticatorFunc) Authenticate(r *http.Request) (Identity, error) { return f(r) }

// Anonymous accepts every request with an empty identity. It is the default
// when a node has no Authenticator.
var Anonymous Authenticator = AuthenticatorFunc(func(*http.Request) (Identity, error) { return Identity{}, nil })

// ErrUnauthorized is wrapped by every authentication failure.
var ErrUnauthorized = errors.New("auth: unauthorized")

// BearerToken returns the token of the request: the Authorization Bearer
// header if present, else the access_token query parameter (which browsers
// must use for WebSockets, since they cannot set headers there).
func BearerToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:])
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// HS256 returns an Authenticator that requires a JWT signed with HMAC-SHA256
// and secret, valid at the time of the request (exp and nbf are checked with
// leeway of 30 s). The user id is the "sub" claim, which must be present.
// Tokens with any other algorithm, "none" included, are refused.
// The returned Authenticator is safe for concurrent use.
func HS256(secret []byte) (Authenticator, error) {
	if len(secret) == 0 {
		return nil, errors.New("auth: HS256 needs a non-empty secret")
	}
	key := append([]byte(nil), secret...)
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithLeeway(30*time.Second),
		jwt.WithExpirationRequired(),
	)
	keyFunc := func(*jwt.Token) (any, error) { return key, nil }
	return AuthenticatorFunc(func(r *http.Request) (Identity, error) {
		raw := BearerToken(r)
		if raw == "" {
			return Identity{}, fmt.Errorf("%w: no bearer token (Authorization header or access_token query)", ErrUnauthorized)
		}
		claims := jwt.MapClaims{}
		if _, err := parser.ParseWithClaims(raw, claims, keyFunc); err != nil {
			return Identity{}, fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
		sub, err := claims.GetSubject()
		if err != nil || sub == "" {
			return Identity{}, fmt.Errorf("%w: token has no \"sub\" claim", ErrUnauthorized)
		}
		return Identity{UserID: sub, Claims: claims}, nil
	}), nil
}
