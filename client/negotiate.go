package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/coder/websocket"
	"github.com/hubfabric/hubfabric/protocol"
)

// maxRedirects is the JS client's limit on negotiate redirects.
const maxRedirects = 100

// maxNegotiateBody bounds the negotiate response body.
const maxNegotiateBody = 1 << 20

// endpoint is where one connection attempt ends up: the WebSocket URL (with
// the id) and the credentials to use there.
type endpoint struct {
	wsURL        string
	connectionID string
	token        string // bearer token, "" for none
}

// resolve negotiates (unless SkipNegotiation), following redirects, and
// returns the WebSocket endpoint for one connection attempt.
func (c *Conn) resolve(ctx context.Context) (endpoint, error) {
	var ep endpoint
	if c.opts.AccessToken != nil {
		tok, err := c.opts.AccessToken(ctx)
		if err != nil {
			return ep, fmt.Errorf("client: access token: %w", err)
		}
		ep.token = tok
	}
	base, err := url.Parse(c.url)
	if err != nil {
		return ep, fmt.Errorf("client: invalid hub URL: %w", err)
	}
	if c.opts.SkipNegotiation {
		ep.wsURL, err = websocketURL(base, "")
		return ep, err
	}
	for range maxRedirects + 1 {
		resp, err := c.negotiate(ctx, base, ep.token)
		if err != nil {
			return ep, err
		}
		if resp.URL != "" {
			c.opts.Logger.Debug("client: negotiate redirect", "url", resp.URL)
			if base, err = url.Parse(resp.URL); err != nil {
				return ep, fmt.Errorf("client: negotiate redirect to an invalid URL: %w", err)
			}
			if resp.AccessToken != "" {
				ep.token = resp.AccessToken
			}
			continue
		}
		if err := checkTransports(resp, c.proto); err != nil {
			return ep, err
		}
		ep.connectionID = resp.ConnectionID
		ep.wsURL, err = websocketURL(base, resp.ConnectionToken)
		return ep, err
	}
	return ep, errors.New("client: negotiate: Negotiate redirection limit exceeded.")
}

// negotiate performs one POST {hub}/negotiate?negotiateVersion=1.
func (c *Conn) negotiate(ctx context.Context, base *url.URL, token string) (protocol.NegotiateResponse, error) {
	var resp protocol.NegotiateResponse
	u := *base
	if strings.HasSuffix(u.Path, "/") {
		u.Path += "negotiate"
	} else {
		u.Path += "/negotiate"
	}
	u.RawPath = ""
	q := u.Query()
	if !q.Has("negotiateVersion") {
		q.Set("negotiateVersion", "1")
	}
	u.RawQuery = q.Encode()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), http.NoBody)
	if err != nil {
		return resp, fmt.Errorf("client: negotiate: %w", err)
	}
	c.setHeaders(req.Header, token)
	req.Header.Set("X-Requested-With", "XMLHttpRequest")
	hr, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return resp, fmt.Errorf("client: negotiate: %w", err)
	}
	defer hr.Body.Close()
	body, err := io.ReadAll(io.LimitReader(hr.Body, maxNegotiateBody))
	if err != nil {
		return resp, fmt.Errorf("client: negotiate: reading the response: %w", err)
	}
	if hr.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("client: negotiate: unexpected status %s", hr.Status)
		if hr.StatusCode == http.StatusNotFound {
			msg += " (either this is not a SignalR endpoint or there is a proxy blocking the connection)"
		}
		if b := bytes.TrimSpace(body); len(b) > 0 && len(b) < 512 {
			msg += ": " + string(b)
		}
		return resp, errors.New(msg)
	}
	resp, err = protocol.ParseNegotiateResponse(body)
	if err != nil {
		return resp, fmt.Errorf("client: negotiate: %w", err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("client: negotiate: server returned an error: %s", resp.Error)
	}
	if resp.UseStatefulReconnect {
		return resp, errors.New("client: negotiate: Client didn't negotiate Stateful Reconnect but the server did.")
	}
	return resp, nil
}

// checkTransports requires WebSockets with the protocol's transfer format.
func checkTransports(resp protocol.NegotiateResponse, p protocol.HubProtocol) error {
	format := p.TransferFormat().String()
	for _, t := range resp.AvailableTransports {
		if t.Transport != "WebSockets" {
			continue
		}
		for _, f := range t.TransferFormats {
			if f == format {
				return nil
			}
		}
		return fmt.Errorf("client: negotiate: the server's WebSockets transport does not support the %s transfer format needed by the %q protocol", format, p.Name())
	}
	return errors.New("client: negotiate: the server does not offer the WebSockets transport")
}

// websocketURL turns the hub URL into its ws/wss form, keeping the query and
// appending id=<token> when token is not empty. The token is appended
// unescaped, as the JS client does (servers issue URL-safe tokens).
func websocketURL(base *url.URL, token string) (string, error) {
	u := *base
	switch strings.ToLower(u.Scheme) {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("client: unsupported URL scheme %q (want http, https, ws or wss)", u.Scheme)
	}
	if token != "" {
		if u.RawQuery != "" {
			u.RawQuery += "&"
		}
		u.RawQuery += "id=" + token
	}
	return u.String(), nil
}

// setHeaders adds the user's headers and the bearer token to h.
func (c *Conn) setHeaders(h http.Header, token string) {
	for k, vs := range c.opts.Header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
}

// connect makes one connection attempt: negotiate, WebSocket, handshake. On
// success it returns a session ready to run (not yet reading).
func (c *Conn) connect(ctx context.Context) (*session, error) {
	ep, err := c.resolve(ctx)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	c.setHeaders(h, ep.token)
	ws, hr, err := websocket.Dial(ctx, ep.wsURL, &websocket.DialOptions{
		HTTPClient: c.opts.HTTPClient,
		HTTPHeader: h,
	})
	if err != nil {
		if hr != nil && hr.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("client: WebSocket failed to connect (the connection could not be found on the server; with several servers check that sticky sessions are enabled): %w", err)
		}
		return nil, fmt.Errorf("client: WebSocket failed to connect: %w", err)
	}
	ws.SetReadLimit(4 * int64(c.opts.MaxMessageSize))
	s := newSession(c, ws, ep.connectionID)
	if err := s.handshake(ctx); err != nil {
		ws.CloseNow()
		s.stop()
		return nil, err
	}
	return s, nil
}
