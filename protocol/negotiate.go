package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// AvailableTransport is one entry of the negotiate response's
// "availableTransports": a transport name ("WebSockets", "ServerSentEvents",
// "LongPolling") and the transfer formats it supports ("Text", "Binary").
type AvailableTransport struct {
	// Transport is the HttpTransportType name.
	Transport string `json:"transport"`
	// TransferFormats lists "Text" and/or "Binary".
	TransferFormats []string `json:"transferFormats"`
}

// NegotiateResponse is the body of the answer to POST {hub}/negotiate.
// When Error is non-empty it is the whole response ({"error":"..."}).
type NegotiateResponse struct {
	// UseStatefulReconnect is written only when true.
	UseStatefulReconnect bool `json:"useStatefulReconnect,omitempty"`
	// NegotiateVersion is the negotiated version (0 or 1).
	NegotiateVersion int `json:"negotiateVersion"`
	// URL redirects the client to another endpoint (written only if set).
	URL string `json:"url,omitempty"`
	// AccessToken accompanies a redirect (written only if set).
	AccessToken string `json:"accessToken,omitempty"`
	// ConnectionID is the public connection id.
	ConnectionID string `json:"connectionId,omitempty"`
	// ConnectionToken is the secret token, written only when NegotiateVersion > 0.
	ConnectionToken string `json:"connectionToken,omitempty"`
	// AvailableTransports lists the transports in the server's preference order.
	AvailableTransports []AvailableTransport `json:"availableTransports,omitempty"`
	// Error, when non-empty, makes the response the error form.
	Error string `json:"error,omitempty"`
}

// AppendNegotiateResponse appends the negotiate response JSON to dst with the
// ASP.NET Core property order: useStatefulReconnect (only if true),
// negotiateVersion, url and accessToken (only if set), connectionId,
// connectionToken (only when NegotiateVersion > 0), availableTransports
// ([] when nil). When r.Error is non-empty it appends only {"error":"..."}.
// No record separator is written (this is an HTTP body).
func AppendNegotiateResponse(dst []byte, r NegotiateResponse) []byte {
	if r.Error != "" {
		dst = append(dst, `{"error":`...)
		dst = appendJSONString(dst, r.Error)
		return append(dst, '}')
	}
	dst = append(dst, '{')
	if r.UseStatefulReconnect {
		dst = append(dst, `"useStatefulReconnect":true,`...)
	}
	dst = append(dst, `"negotiateVersion":`...)
	dst = strconv.AppendInt(dst, int64(r.NegotiateVersion), 10)
	if r.URL != "" {
		dst = append(dst, `,"url":`...)
		dst = appendJSONString(dst, r.URL)
	}
	if r.AccessToken != "" {
		dst = append(dst, `,"accessToken":`...)
		dst = appendJSONString(dst, r.AccessToken)
	}
	dst = append(dst, `,"connectionId":`...)
	dst = appendJSONString(dst, r.ConnectionID)
	if r.NegotiateVersion > 0 {
		dst = append(dst, `,"connectionToken":`...)
		dst = appendJSONString(dst, r.ConnectionToken)
	}
	dst = append(dst, `,"availableTransports":[`...)
	for i, t := range r.AvailableTransports {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"transport":`...)
		dst = appendJSONString(dst, t.Transport)
		dst = append(dst, `,"transferFormats":[`...)
		for j, f := range t.TransferFormats {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, f)
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, "]}"...)
}

// errOldServer is the JS client's message for an ASP.NET (non-Core) server.
const errOldServer = "Detected a connection attempt to an ASP.NET SignalR Server. This client only supports connecting to an ASP.NET Core SignalR Server. See https://aka.ms/signalr-core-differences for details."

// ParseNegotiateResponse decodes a negotiate response body as a client does.
// Property names are matched case-sensitively and unknown ones are ignored.
// An "error" property is returned in r.Error with a nil error (the caller
// turns it into a failure). Like the JS client, it fails on a truthy
// "ProtocolVersion" property (an old ASP.NET SignalR server), and when
// negotiateVersion is missing or below 1 it sets ConnectionToken to
// ConnectionID. Wrongly typed known properties are errors.
func ParseNegotiateResponse(data []byte) (NegotiateResponse, error) {
	var r NegotiateResponse
	i, err := jsonObjectRecord("negotiate", data)
	if err != nil {
		return r, err
	}
	field := func(key string, val []byte, dst any) error {
		if err := json.Unmarshal(val, dst); err != nil {
			return fmt.Errorf("protocol: negotiate: %q: %v", key, err)
		}
		return nil
	}
	err = jsonObjectEach(data, i, func(key string, val []byte, _ int) error {
		if val[0] == 'n' && key != "ProtocolVersion" {
			return nil // null: treat as absent
		}
		switch key {
		case "ProtocolVersion":
			switch string(val) {
			case "null", "false", "0", `""`:
				return nil // falsy in JavaScript
			}
			return errors.New("protocol: negotiate: " + errOldServer)
		case "useStatefulReconnect":
			return field(key, val, &r.UseStatefulReconnect)
		case "negotiateVersion":
			var f float64
			if err := field(key, val, &f); err != nil {
				return err
			}
			r.NegotiateVersion = int(f)
		case "url":
			return field(key, val, &r.URL)
		case "accessToken":
			return field(key, val, &r.AccessToken)
		case "connectionId":
			return field(key, val, &r.ConnectionID)
		case "connectionToken":
			return field(key, val, &r.ConnectionToken)
		case "availableTransports":
			return field(key, val, &r.AvailableTransports)
		case "error":
			return field(key, val, &r.Error)
		}
		return nil
	})
	if err != nil {
		return NegotiateResponse{}, err
	}
	if r.NegotiateVersion < 1 {
		r.ConnectionToken = r.ConnectionID
	}
	return r, nil
}

// Negotiate version rules of ASP.NET Core (HttpConnectionDispatcher).
const (
	// NegotiateVersionMax is the highest negotiate version a server speaks.
	NegotiateVersionMax = 1
	// errNonIntegerNegotiateVersion is ASP.NET Core's message for a bad value.
	errNonIntegerNegotiateVersion = "The client requested a non-integer protocol version."
)

// ParseNegotiateVersion applies ASP.NET Core's rules to the negotiateVersion
// query value (present reports whether the parameter was there): missing is
// 0; a value that is not an integer (surrounding whitespace and a sign are
// allowed, as in .NET int.TryParse) fails with "The client requested a
// non-integer protocol version."; a negative value fails with "The client
// requested version 'N', but the server does not support this version.";
// values above 1 are answered with 1. The error text is exactly the ASP.NET
// message, meant for the {"error":...} negotiate response.
func ParseNegotiateVersion(v string, present bool) (int, error) {
	if !present {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return 0, errors.New(errNonIntegerNegotiateVersion)
	}
	if n < 0 {
		return 0, fmt.Errorf("The client requested version '%d', but the server does not support this version.", n)
	}
	if n > NegotiateVersionMax {
		return NegotiateVersionMax, nil
	}
	return int(n), nil
}
