package service

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubfabric/hubfabric/auth"
)

// Claim names of the user id in client access tokens, as Azure SignalR
// Service reads them.
const (
	claimNameID           = "nameid"
	claimNameIdentifier   = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"
	tokenLeeway           = 30 * time.Second
	errTokenMissingHeader = "no bearer token (Authorization: Bearer header or access_token query)"
)

// verifier checks HS256 tokens signed with any access key.
type verifier struct {
	keys     jwt.VerificationKeySet
	endpoint string // "" or the configured base URL, no trailing '/'
	parser   *jwt.Parser
}

func newVerifier(keys []string, endpoint string) *verifier {
	v := &verifier{endpoint: endpoint, parser: jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithExpirationRequired(),
	)}
	for _, k := range keys {
		v.keys.Keys = append(v.keys.Keys, []byte(k))
	}
	return v
}

// base is the URL audiences are relative to: the configured endpoint, else
// the request's scheme and Host.
func (v *verifier) base(r *http.Request) string {
	if v.endpoint != "" {
		return v.endpoint
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// normAudience makes audiences comparable: case, a trailing '/' and a '/'
// before the query do not matter.
func normAudience(a string) string {
	a = strings.ToLower(strings.TrimSpace(a))
	path, query, hasQuery := strings.Cut(a, "?")
	path = strings.TrimRight(path, "/")
	if hasQuery {
		return path + "?" + query
	}
	return path
}

// verify parses raw and checks signature, algorithm, expiry and that its
// aud is one of audiences. Errors wrap auth.ErrUnauthorized and say why.
func (v *verifier) verify(raw string, audiences ...string) (jwt.MapClaims, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: %s", auth.ErrUnauthorized, errTokenMissingHeader)
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return v.keys, nil }); err != nil {
		return nil, fmt.Errorf("%w: %v", auth.ErrUnauthorized, err)
	}
	auds, err := claims.GetAudience()
	if err != nil || len(auds) == 0 {
		return nil, fmt.Errorf("%w: the token has no \"aud\" claim", auth.ErrUnauthorized)
	}
	for _, a := range auds {
		na := normAudience(a)
		for _, want := range audiences {
			if na == normAudience(want) {
				return claims, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: the token's audience %q is not this URL (want %q)", auth.ErrUnauthorized, shorten(strings.Join(auds, ","), 200), audiences[0])
}

// verifyREST checks a REST API request's token: aud is the request URL
// without its query (with it is accepted too).
func (v *verifier) verifyREST(r *http.Request) (jwt.MapClaims, error) {
	raw := ""
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		raw = strings.TrimSpace(h[7:])
	} else if h != "" {
		return nil, fmt.Errorf("%w: the Authorization header is not a Bearer token", auth.ErrUnauthorized)
	}
	u := v.base(r) + r.URL.EscapedPath()
	auds := []string{u}
	if r.URL.RawQuery != "" {
		auds = append(auds, u+"?"+r.URL.RawQuery)
	}
	return v.verify(raw, auds...)
}

// clientAuthenticator checks client access tokens on negotiate and connect
// of hub (from the path /client/{hub}... or /hubs/{hub}...): aud is the
// client URL ({base}/client/?hub={hub}, or {base}/client/ or
// {base}/hubs/{hub}); the user id is the nameid claim (or the
// nameidentifier claim of the long form).
func (v *verifier) clientAuthenticator() auth.Authenticator {
	return auth.AuthenticatorFunc(func(r *http.Request) (auth.Identity, error) {
		hub := hubOfClientPath(r.URL.Path)
		b := v.base(r)
		claims, err := v.verify(auth.BearerToken(r), b+"/client/?hub="+hub, b+"/client/", b+"/hubs/"+hub)
		if err != nil {
			return auth.Identity{}, err
		}
		user := ""
		for _, k := range []string{claimNameID, claimNameIdentifier} {
			if s, ok := claims[k].(string); ok && s != "" {
				user = s
				break
			}
		}
		q := r.URL.Query()
		q.Del("id")
		q.Del("access_token")
		q.Del("hub")
		claims[claimClientQuery] = q.Encode()
		return auth.Identity{UserID: user, Claims: claims}, nil
	})
}

// hubOfClientPath is the hub name of a client path: the segment before a
// final "negotiate", else the last one.
func hubOfClientPath(p string) string {
	p = strings.TrimSuffix(p, "/")
	p = strings.TrimSuffix(p, "/negotiate")
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// shorten cuts s to at most n bytes for error texts.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
