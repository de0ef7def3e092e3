package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// HandshakeRequest is the first record a client sends:
// {"protocol":"json","version":1} followed by RecordSeparator.
type HandshakeRequest struct {
	// Protocol is the hub protocol name ("json", "messagepack").
	Protocol string
	// Version is the requested hub protocol version (1, or 2 with stateful reconnect).
	Version int
}

// HandshakeResponse is the server's answer to the handshake. An empty Error
// means success.
type HandshakeResponse struct {
	// Error is the server's error message, empty on success.
	Error string
}

// ASP.NET Core handshake error strings that carry no parameters.
const (
	// HandshakeErrorCanceled is sent when the handshake times out or is too large.
	HandshakeErrorCanceled = "Handshake was canceled."
	// HandshakeErrorUnexpected is sent when the handshake fails for any other reason.
	HandshakeErrorUnexpected = "An unexpected error occurred during connection handshake."
)

// HandshakeErrorUnsupportedProtocol returns the ASP.NET Core error for an
// unknown protocol name: "The protocol '<p>' is not supported.".
func HandshakeErrorUnsupportedProtocol(protocol string) string {
	return "The protocol '" + protocol + "' is not supported."
}

// HandshakeErrorUnsupportedVersion returns the ASP.NET Core error for a
// version above the protocol's: "The server does not support version <v> of
// the '<p>' protocol.".
func HandshakeErrorUnsupportedVersion(protocol string, version int) string {
	return "The server does not support version " + strconv.Itoa(version) + " of the '" + protocol + "' protocol."
}

// HandshakeErrorTransferFormat returns the ASP.NET Core error for a protocol
// whose transfer format the transport lacks: "Cannot use the '<p>' protocol
// on the current transport. The transport does not support '<fmt>' transfer
// format.".
func HandshakeErrorTransferFormat(protocol string, format TransferFormat) string {
	return "Cannot use the '" + protocol + "' protocol on the current transport. The transport does not support '" + format.String() + "' transfer format."
}

// Lookup returns the hub protocol with the given handshake name ("json" or
// "messagepack"). Names match case-insensitively, as in ASP.NET Core.
func Lookup(name string) (HubProtocol, bool) {
	switch {
	case strings.EqualFold(name, "json"):
		return JSON, true
	case strings.EqualFold(name, "messagepack"):
		return MessagePack, true
	}
	return nil, false
}

// handshakeRecord finds the first RS-terminated record in data.
func handshakeRecord(data []byte, maxSize int) (rec []byte, consumed int, err error) {
	idx := bytes.IndexByte(data, RecordSeparator)
	if idx < 0 {
		if maxSize > 0 && len(data) > maxSize {
			return nil, 0, fmt.Errorf("%w: handshake of more than %d bytes", ErrMessageTooLarge, maxSize)
		}
		return nil, 0, ErrIncomplete
	}
	if maxSize > 0 && idx > maxSize {
		return nil, 0, fmt.Errorf("%w: handshake of %d bytes, limit %d", ErrMessageTooLarge, idx, maxSize)
	}
	return data[:idx], idx + 1, nil
}

// jsonObjectRecord validates rec as one JSON object and returns the offset of
// its opening brace.
func jsonObjectRecord(what string, rec []byte) (int, error) {
	i := jsonSkipWS(rec, 0)
	if i == len(rec) {
		return 0, fmt.Errorf("protocol: %s: empty record", what)
	}
	if !json.Valid(rec) {
		return 0, jsonRecordError(what, rec)
	}
	if rec[i] != '{' {
		return 0, fmt.Errorf("protocol: %s: expected a JSON object, got %s", what, jsonKind(rec[i]))
	}
	return i, nil
}

// ParseHandshakeRequest decodes the handshake request at the start of data
// and returns it with the number of bytes consumed (through the separator);
// bytes after that are the first hub messages. It returns ErrIncomplete when
// no separator has arrived yet and len(data) <= maxSize, and an error wrapping
// ErrMessageTooLarge when the record (excluding the separator) is longer than
// maxSize (0 or less means no limit). "protocol" must be a string and
// "version" an integer; unknown properties are skipped.
func ParseHandshakeRequest(data []byte, maxSize int) (req HandshakeRequest, consumed int, err error) {
	rec, consumed, err := handshakeRecord(data, maxSize)
	if err != nil {
		return req, 0, err
	}
	if !utf8.Valid(rec) {
		return req, 0, errors.New("protocol: handshake: the request is not valid UTF-8")
	}
	i, err := jsonObjectRecord("handshake", rec)
	if err != nil {
		return req, 0, err
	}
	var hasProtocol, hasVersion bool
	err = jsonObjectEach(rec, i, func(key string, val []byte, _ int) error {
		switch key {
		case "protocol":
			if val[0] != '"' {
				return fmt.Errorf(`protocol: handshake: "protocol" must be a string, got %s`, jsonKind(val[0]))
			}
			s, err := jsonDecodeString(val, bytes.IndexByte(val, '\\') >= 0)
			if err != nil {
				return err
			}
			req.Protocol, hasProtocol = s, true
		case "version":
			n, err := jsonInt(val)
			if err != nil || n < math.MinInt32 || n > math.MaxInt32 {
				return fmt.Errorf(`protocol: handshake: "version" must be a 32-bit integer, got %s`, val)
			}
			req.Version, hasVersion = int(n), true
		}
		return nil
	})
	if err != nil {
		return HandshakeRequest{}, 0, err
	}
	if !hasProtocol {
		return HandshakeRequest{}, 0, errors.New(`protocol: handshake: missing "protocol"`)
	}
	if !hasVersion {
		return HandshakeRequest{}, 0, errors.New(`protocol: handshake: missing "version"`)
	}
	return req, consumed, nil
}

// AppendHandshakeRequest appends {"protocol":"<p>","version":<v>} and
// RecordSeparator to dst.
func AppendHandshakeRequest(dst []byte, req HandshakeRequest) []byte {
	dst = append(dst, `{"protocol":`...)
	dst = appendJSONString(dst, req.Protocol)
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, int64(req.Version), 10)
	return append(dst, '}', RecordSeparator)
}

// AppendHandshakeResponse appends the handshake response to dst: {} and
// RecordSeparator when errMsg is empty, otherwise {"error":"<errMsg>"}
// (JSON-escaped) and RecordSeparator.
func AppendHandshakeResponse(dst []byte, errMsg string) []byte {
	if errMsg == "" {
		return append(dst, '{', '}', RecordSeparator)
	}
	dst = append(dst, `{"error":`...)
	dst = appendJSONString(dst, errMsg)
	return append(dst, '}', RecordSeparator)
}

// ParseHandshakeResponse decodes the handshake response at the start of data
// (as a Go client would) and returns it with the number of bytes consumed;
// bytes after that are the first hub messages. It returns ErrIncomplete when
// no separator has arrived yet, and an error when the record is not a JSON
// object, has a "type" property (a hub message, not a handshake response) or
// has a non-string "error". Other properties (such as minorVersion) are ignored.
func ParseHandshakeResponse(data []byte) (HandshakeResponse, int, error) {
	var resp HandshakeResponse
	rec, consumed, err := handshakeRecord(data, 0)
	if err != nil {
		return resp, 0, err
	}
	i, err := jsonObjectRecord("handshake response", rec)
	if err != nil {
		return resp, 0, err
	}
	err = jsonObjectEach(rec, i, func(key string, val []byte, _ int) error {
		switch key {
		case "type":
			return errors.New("protocol: handshake response: expected a handshake response from the server, got a message with a \"type\"")
		case "error":
			if val[0] == 'n' {
				resp.Error = ""
				return nil
			}
			s, err := jsonStringField(key, val)
			if err != nil {
				return err
			}
			resp.Error = s
		}
		return nil
	})
	if err != nil {
		return HandshakeResponse{}, 0, err
	}
	return resp, consumed, nil
}
