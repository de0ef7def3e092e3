package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// This file holds the small JSON toolkit shared by the JSON hub protocol, the
// handshake and the negotiate response: a walker over input that
// encoding/json has already validated (so it only has to find boundaries),
// and a string escaper for the hand-written encoders.

// jsonRecordError turns the failure of json.Valid into an error that says
// where the syntax is wrong. It is only called on the error path.
func jsonRecordError(what string, rec []byte) error {
	var raw json.RawMessage
	if err := json.Unmarshal(rec, &raw); err != nil {
		return fmt.Errorf("protocol: %s: invalid JSON: %v", what, err)
	}
	return fmt.Errorf("protocol: %s: invalid JSON", what)
}

// jsonSkipWS returns the index of the first non-whitespace byte at or after i.
func jsonSkipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// jsonStringEnd returns the index just past the closing quote of the string
// starting at b[i] == '"' (valid JSON assumed), and whether it has escapes.
func jsonStringEnd(b []byte, i int) (end int, escaped bool) {
	i++
	for i < len(b) {
		switch b[i] {
		case '\\':
			escaped = true
			i += 2
		case '"':
			return i + 1, escaped
		default:
			i++
		}
	}
	return len(b), escaped
}

// jsonSkipValue returns the index just past the JSON value starting at b[i]
// (valid JSON assumed, i at the first byte of the value).
func jsonSkipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _ := jsonStringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _ = jsonStringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return len(b)
	}
}

// jsonDecodeString decodes the JSON string token tok (quotes included).
// Strings without escapes and with valid UTF-8 are converted directly; the
// rest go through encoding/json so invalid UTF-8 becomes U+FFFD exactly as
// encoding/json does.
func jsonDecodeString(tok []byte, escaped bool) (string, error) {
	inner := tok[1 : len(tok)-1]
	if !escaped && utf8.Valid(inner) {
		return string(inner), nil
	}
	var s string
	err := json.Unmarshal(tok, &s)
	return s, err
}

// jsonKind classifies a JSON value by its first byte.
func jsonKind(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// jsonObjectEach calls fn for every property of the JSON object starting at
// obj[i] == '{' (valid JSON assumed), in input order. val spans exactly the
// value's token bytes. It stops at the first error fn returns.
func jsonObjectEach(obj []byte, i int, fn func(key string, val []byte, valStart int) error) error {
	i = jsonSkipWS(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for i < len(obj) {
		kEnd, esc := jsonStringEnd(obj, i)
		key, err := jsonDecodeString(obj[i:kEnd], esc)
		if err != nil {
			return err
		}
		i = jsonSkipWS(obj, kEnd)
		i = jsonSkipWS(obj, i+1) // past ':'
		vEnd := jsonSkipValue(obj, i)
		if err := fn(key, obj[i:vEnd], i); err != nil {
			return err
		}
		i = jsonSkipWS(obj, vEnd)
		if i >= len(obj) || obj[i] == '}' {
			return nil
		}
		i = jsonSkipWS(obj, i+1) // past ','
	}
	return nil
}

// jsonArrayEach calls fn for every element of the JSON array arr (valid JSON,
// arr[0] == '['), with the element's start and end offsets within arr.
func jsonArrayEach(arr []byte, fn func(start, end int) error) error {
	i := jsonSkipWS(arr, 1)
	if i < len(arr) && arr[i] == ']' {
		return nil
	}
	for i < len(arr) {
		end := jsonSkipValue(arr, i)
		if err := fn(i, end); err != nil {
			return err
		}
		i = jsonSkipWS(arr, end)
		if i >= len(arr) || arr[i] == ']' {
			return nil
		}
		i = jsonSkipWS(arr, i+1)
	}
	return nil
}

// errNotInteger is returned by jsonInt for numbers with a fraction/exponent.
var errNotInteger = errors.New("not an integer")

// jsonInt parses an integer JSON number token into an int64.
func jsonInt(tok []byte) (int64, error) {
	if len(tok) == 0 || jsonKind(tok[0]) != "number" {
		return 0, errNotInteger
	}
	if bytes.ContainsAny(tok, ".eE") {
		return 0, errNotInteger
	}
	return strconv.ParseInt(string(tok), 10, 64)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal. It escapes '"', '\\',
// control characters, U+2028 and U+2029, and replaces invalid UTF-8 with
// U+FFFD (like encoding/json, but without HTML escaping).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
