package service

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/hubfabric/hubfabric/hub"
	"github.com/hubfabric/hubfabric/protocol"
)

// claimClientQuery is where the client authenticator keeps the query of
// the connect request (without its tokens) for X-ASRS-Client-Query. It is
// a system claim, not sent in X-ASRS-User-Claims.
const claimClientQuery = "asrs.s.query"

// maxUpstreamResponse bounds an upstream's response body (an invocation's
// result): 1 MiB, as Azure SignalR Service's message size.
const maxUpstreamResponse = 1 << 20

// upstream POSTs events to the URL template, at most
// Config.UpstreamConcurrency at a time.
type upstream struct {
	template   string
	hubs       patterns
	categories patterns
	events     patterns
	keys       []string
	timeout    time.Duration
	slots      chan struct{}
	client     *http.Client
	ctx        context.Context
	cancel     context.CancelFunc
	log        *slog.Logger
}

// patterns is a comma-separated list of names, "*" for any;
// case-insensitive.
type patterns []string

func parsePatterns(s string) patterns {
	var p patterns
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			p = append(p, strings.ToLower(v))
		}
	}
	return p
}

func (p patterns) match(name string) bool {
	name = strings.ToLower(name)
	for _, v := range p {
		if v == "*" || v == name {
			return true
		}
	}
	return false
}

func newUpstream(cfg Config) *upstream {
	ctx, cancel := context.WithCancel(context.Background())
	return &upstream{
		template: cfg.Upstream, hubs: parsePatterns(cfg.UpstreamHubs), categories: parsePatterns(cfg.UpstreamCategories),
		events: parsePatterns(cfg.UpstreamEvents), keys: cfg.AccessKeys, timeout: cfg.UpstreamTimeout,
		slots:  make(chan struct{}, cfg.UpstreamConcurrency),
		client: &http.Client{Timeout: cfg.UpstreamTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		ctx:    ctx, cancel: cancel, log: cfg.Logger,
	}
}

func (u *upstream) close() {
	u.cancel()
	u.client.CloseIdleConnections()
}

func (u *upstream) matches(hubName, category, event string) bool {
	return u.hubs.match(hubName) && u.categories.match(category) && u.events.match(event)
}

// Signature is the X-ASRS-Signature of connID: "sha256=<hex HMAC-SHA256
// of the connection id>" for each key, comma-separated. Exported for
// upstreams written in Go, to check requests.
func Signature(connID string, keys ...string) string {
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		m := hmac.New(sha256.New, []byte(k))
		m.Write([]byte(connID))
		parts = append(parts, "sha256="+hex.EncodeToString(m.Sum(nil)))
	}
	return strings.Join(parts, ",")
}

type claimJSON struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// userClaims encodes claims for X-ASRS-User-Claims: a JSON array of
// {"type","value"}, sorted by type, without system claims (asrs.s.*) and
// the token's own (aud, exp, iat, nbf).
func userClaims(claims map[string]any) string {
	out := []claimJSON{}
	for k, v := range claims {
		switch {
		case strings.HasPrefix(k, "asrs.s."), k == "aud", k == "exp", k == "iat", k == "nbf":
			continue
		}
		var vals []any
		if list, ok := v.([]any); ok {
			vals = list
		} else {
			vals = []any{v}
		}
		for _, x := range vals {
			s, ok := x.(string)
			if !ok {
				b, _ := json.Marshal(x)
				s = string(b)
			}
			out = append(out, claimJSON{Type: k, Value: s})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Type < out[j].Type || out[i].Type == out[j].Type && out[i].Value < out[j].Value
	})
	b, _ := json.Marshal(out)
	return string(b)
}

// errUpstream is wrapped by every failed upstream request.
var errUpstream = errors.New("upstream")

// post sends one event and returns the response body of a 2xx answer.
func (u *upstream) post(ctx context.Context, hubName, connID, user string, claims map[string]any, category, event, contentType string, body []byte) ([]byte, error) {
	target := strings.NewReplacer("{hub}", url.PathEscape(hubName), "{category}", url.PathEscape(category), "{event}", url.PathEscape(event)).Replace(u.template)
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	stop := context.AfterFunc(u.ctx, cancel)
	defer stop()
	// A slot is waited for a quarter of the timeout at most: when every
	// slot is taken by slow requests, later ones fail soon, saying so.
	wait := time.NewTimer(u.timeout / 4)
	defer wait.Stop()
	select {
	case u.slots <- struct{}{}:
		defer func() { <-u.slots }()
	case <-wait.C:
		return nil, fmt.Errorf("%w: no free upstream slot within %s (%d requests in flight)", errUpstream, u.timeout/4, cap(u.slots))
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: no free upstream slot (%d requests in flight): %v", errUpstream, cap(u.slots), ctx.Err())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: bad URL: %v", errUpstream, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	h := req.Header
	h.Set("X-ASRS-Connection-Id", connID)
	h.Set("X-ASRS-Hub", hubName)
	h.Set("X-ASRS-Category", category)
	h.Set("X-ASRS-Event", event)
	if user != "" {
		h.Set("X-ASRS-User-Id", user)
	}
	h.Set("X-ASRS-User-Claims", userClaims(claims))
	if q, ok := claims[claimClientQuery].(string); ok {
		h.Set("X-ASRS-Client-Query", q)
	}
	h.Set("X-ASRS-Signature", Signature(connID, u.keys...))
	resp, err := u.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%w: no answer within %s", errUpstream, u.timeout)
		}
		return nil, fmt.Errorf("%w: request failed: %v", errUpstream, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamResponse+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the answer failed: %v", errUpstream, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("%w: answered %d %s", errUpstream, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if len(data) > maxUpstreamResponse {
		return nil, fmt.Errorf("%w: the answer is over %d bytes", errUpstream, maxUpstreamResponse)
	}
	return data, nil
}

// event posts a connection event; a failure is logged, never returned
// (an upstream that is down does not refuse or hold connections longer
// than its timeout).
func (u *upstream) event(ctx context.Context, hubName, connID, user string, claims map[string]any, category, event string, cause error) {
	if !u.matches(hubName, category, event) {
		return
	}
	var body []byte
	ct := ""
	if event == "disconnected" && cause != nil {
		body, _ = json.Marshal(map[string]string{"Error": cause.Error()})
		ct = "application/json"
	}
	if _, err := u.post(ctx, hubName, connID, user, claims, category, event, ct, body); err != nil {
		u.log.Debug("service: upstream event failed", "hub", hubName, "conn_id", connID, "event", event, "err", err)
	}
}

// invoke posts a client invocation as a messages event: the body is the
// invocation encoded in the client's protocol (JSON or MessagePack, without
// the record framing); the answer's body is the result.
func (u *upstream) invoke(c *hub.Context, hubName string, inv hub.Invocation) (any, error) {
	if inv.Target == "." || inv.Target == ".." {
		// PathEscape keeps dots: "{event}" = ".." would climb the upstream's path.
		return nil, hub.Errorf("method name %q cannot be forwarded upstream", inv.Target)
	}
	if !u.matches(hubName, "messages", inv.Target) {
		return nil, hub.Errorf("method %q is not forwarded upstream (no upstream pattern matches it)", inv.Target)
	}
	args := make([]any, len(inv.Arguments))
	for i, a := range inv.Arguments {
		args[i] = a
	}
	framed, err := inv.Protocol.AppendMessage(nil, &protocol.Invocation{InvocationID: inv.ID, Target: inv.Target, Arguments: args})
	if err != nil {
		return nil, hub.Errorf("method %q: the invocation could not be re-encoded: %v", inv.Target, err)
	}
	binary := inv.Protocol.TransferFormat() == protocol.TransferBinary
	body, ct := unframe(framed, binary)
	data, err := u.post(c, hubName, c.ConnectionID, c.UserID, c.Claims, "messages", inv.Target, ct, body)
	if err != nil {
		return nil, hub.Errorf("method %q: %v", inv.Target, err)
	}
	return resultOf(data, binary)
}

// unframe strips the record framing: JSON's trailing record separator,
// MessagePack's varint length prefix.
func unframe(framed []byte, binary bool) ([]byte, string) {
	if !binary {
		return bytes.TrimSuffix(framed, []byte{0x1e}), "application/json"
	}
	i := 0
	for i < len(framed) && framed[i]&0x80 != 0 {
		i++
	}
	return framed[i+1:], "application/x-msgpack"
}

// resultOf turns an upstream's answer into an invocation result: empty is
// null; for JSON a valid JSON text is passed as it is, anything else as a
// string; for MessagePack one valid object is decoded (and re-encoded by
// the protocol), anything else is a string.
func resultOf(data []byte, binary bool) (any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	if !binary {
		if json.Valid(data) {
			return protocol.RawValue(bytes.TrimSpace(data)), nil
		}
		return string(data), nil
	}
	// The protocol's own decoder checks every length against the bytes
	// there are: the library's decoder made a map header claiming four
	// billion entries allocate (and hang) before finding the data short.
	var v any
	if err := protocol.MessagePack.Unmarshal(protocol.RawValue(data), &v); err == nil {
		return v, nil
	}
	return string(data), nil
}
