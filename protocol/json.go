package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"unicode/utf8"
)

// JSON is the SignalR JSON hub protocol: name "json", version 2, text
// frames. Each record is one UTF-8 JSON object followed by RecordSeparator.
//
// ParseMessages accepts properties in any order, skips unknown properties and
// returns arguments, stream items and results as RawValues holding the exact
// JSON token bytes (copied, never aliasing the input). The size limit applies
// to the JSON text of one record, excluding the separator. When a record is
// rejected, consumed covers the records before it plus, when the record itself
// was complete (its separator was found), that record too; so a caller that
// wants to ignore ErrUnknownMessageType can continue after consumed.
//
// AppendMessage writes the ASP.NET Core property order: type, headers (only if
// non-empty), invocationId (only if non-empty), then the rest. RawValue
// arguments are written verbatim; other values are encoded with encoding/json
// (HTML escaping off).
//
// Unmarshal uses encoding/json, except that a *any target receives int64 for
// integer numbers, float64 for other numbers, map[string]any for objects and
// []any for arrays, and a *RawValue target receives a copy of the raw bytes.
var JSON HubProtocol = jsonProtocol{}

type jsonProtocol struct{}

func (jsonProtocol) Name() string                   { return "json" }
func (jsonProtocol) Version() int                   { return 2 }
func (jsonProtocol) TransferFormat() TransferFormat { return TransferText }

// ParseMessages implements HubProtocol.
func (jsonProtocol) ParseMessages(data []byte, maxMessageSize int) ([]Message, int, error) {
	var msgs []Message
	off := 0
	for off < len(data) {
		idx := bytes.IndexByte(data[off:], RecordSeparator)
		if idx < 0 {
			if maxMessageSize > 0 && len(data)-off > maxMessageSize {
				return msgs, off, fmt.Errorf("%w: partial JSON record of %d bytes, limit %d", ErrMessageTooLarge, len(data)-off, maxMessageSize)
			}
			break
		}
		if maxMessageSize > 0 && idx > maxMessageSize {
			return msgs, off, fmt.Errorf("%w: JSON record of %d bytes, limit %d", ErrMessageTooLarge, idx, maxMessageSize)
		}
		rec := data[off : off+idx]
		off += idx + 1
		if !utf8.Valid(rec) {
			// Text frames must carry UTF-8 (RFC 6455), and raw arguments are
			// relayed verbatim into other clients' text frames.
			return msgs, off, errors.New("protocol: JSON record is not valid UTF-8")
		}
		m, err := parseJSONRecord(rec)
		if err != nil {
			return msgs, off, err
		}
		msgs = append(msgs, m)
	}
	return msgs, off, nil
}

// jsonFields collects the properties of one record before the type is known
// (the JS client writes "type" last).
type jsonFields struct {
	typ            int64
	hasType        bool
	headers        map[string]string
	invocationID   string
	hasInvID       bool
	target         string
	hasTarget      bool
	args           []byte // the array token
	hasArgs        bool
	argsStart      int
	streamIDs      []string
	item           []byte
	itemStart      int
	hasItem        bool
	result         []byte
	resultStart    int
	hasResult      bool
	errMsg         string
	hasErr         bool // present and not null
	allowReconnect bool
	sequenceID     int64
	hasSeq         bool
}

func fieldTypeError(name, want string, val []byte) error {
	return fmt.Errorf("protocol: json: %q must be %s, got %s", name, want, jsonKind(val[0]))
}

func parseJSONRecord(rec []byte) (Message, error) {
	i := jsonSkipWS(rec, 0)
	if i == len(rec) {
		return nil, errors.New("protocol: json: empty record")
	}
	if !json.Valid(rec) {
		return nil, jsonRecordError("json", rec)
	}
	if rec[i] != '{' {
		return nil, fmt.Errorf("protocol: json: record is a JSON %s, not an object", jsonKind(rec[i]))
	}
	var f jsonFields
	err := jsonObjectEach(rec, i, func(key string, val []byte, start int) error {
		switch key {
		case "type":
			n, err := jsonInt(val)
			if err != nil {
				return fmt.Errorf("protocol: json: \"type\" must be an integer, got %s", val)
			}
			f.typ, f.hasType = n, true
		case "headers":
			if val[0] == 'n' {
				f.headers = nil
				return nil
			}
			if val[0] != '{' {
				return fieldTypeError(key, "an object", val)
			}
			f.headers = nil
			return jsonObjectEach(val, 0, func(k string, v []byte, _ int) error {
				if v[0] != '"' {
					return fmt.Errorf("protocol: json: header %q must be a string, got %s", k, jsonKind(v[0]))
				}
				s, err := jsonDecodeString(v, bytes.IndexByte(v, '\\') >= 0)
				if err != nil {
					return err
				}
				if f.headers == nil {
					f.headers = make(map[string]string)
				}
				f.headers[k] = s
				return nil
			})
		case "invocationId":
			if val[0] == 'n' {
				f.invocationID, f.hasInvID = "", false
				return nil
			}
			s, err := jsonStringField(key, val)
			if err != nil {
				return err
			}
			f.invocationID, f.hasInvID = s, true
		case "target":
			s, err := jsonStringField(key, val)
			if err != nil {
				return err
			}
			f.target, f.hasTarget = s, true
		case "arguments":
			if val[0] != '[' {
				return fieldTypeError(key, "an array", val)
			}
			f.args, f.argsStart, f.hasArgs = val, start, true
		case "streamIds":
			f.streamIDs = nil
			if val[0] == 'n' {
				return nil
			}
			if val[0] != '[' {
				return fieldTypeError(key, "an array", val)
			}
			return jsonArrayEach(val, func(s, e int) error {
				if val[s] != '"' {
					return fmt.Errorf("protocol: json: \"streamIds\" must hold strings, got %s", jsonKind(val[s]))
				}
				str, err := jsonDecodeString(val[s:e], bytes.IndexByte(val[s:e], '\\') >= 0)
				if err != nil {
					return err
				}
				f.streamIDs = append(f.streamIDs, str)
				return nil
			})
		case "item":
			f.item, f.itemStart, f.hasItem = val, start, true
		case "result":
			f.result, f.resultStart, f.hasResult = val, start, true
		case "error":
			if val[0] == 'n' {
				f.errMsg, f.hasErr = "", false
				return nil
			}
			s, err := jsonStringField(key, val)
			if err != nil {
				return err
			}
			f.errMsg, f.hasErr = s, true
		case "allowReconnect":
			switch val[0] {
			case 't':
				f.allowReconnect = true
			case 'f', 'n':
				f.allowReconnect = false
			default:
				return fieldTypeError(key, "a boolean", val)
			}
		case "sequenceId":
			n, err := jsonInt(val)
			if err != nil {
				return fmt.Errorf("protocol: json: \"sequenceId\" must be an integer, got %s", val)
			}
			f.sequenceID, f.hasSeq = n, true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !f.hasType {
		return nil, errors.New(`protocol: json: missing "type"`)
	}
	return f.message(rec)
}

func jsonStringField(name string, val []byte) (string, error) {
	if val[0] != '"' {
		return "", fieldTypeError(name, "a string", val)
	}
	return jsonDecodeString(val, bytes.IndexByte(val, '\\') >= 0)
}

// message builds the typed message out of the collected fields.
func (f *jsonFields) message(rec []byte) (Message, error) {
	var own []byte // one copy of the record backs every RawValue
	raw := func(start, n int) RawValue {
		if own == nil {
			own = append([]byte(nil), rec...)
		}
		return RawValue(own[start : start+n : start+n])
	}
	requireID := func(what string) error {
		if !f.hasInvID || f.invocationID == "" {
			return fmt.Errorf(`protocol: %s: missing "invocationId"`, what)
		}
		return nil
	}
	args := func(what string) ([]any, error) {
		if !f.hasTarget {
			return nil, fmt.Errorf(`protocol: %s: missing "target"`, what)
		}
		if !f.hasArgs {
			return nil, fmt.Errorf(`protocol: %s: missing "arguments"`, what)
		}
		var out []any
		_ = jsonArrayEach(f.args, func(s, e int) error {
			if out == nil {
				out = make([]any, 0, 4)
			}
			out = append(out, raw(f.argsStart+s, e-s))
			return nil
		})
		if out == nil {
			out = []any{}
		}
		return out, nil
	}
	switch MessageType(f.typ) {
	case TypeInvocation:
		a, err := args("invocation")
		if err != nil {
			return nil, err
		}
		return &Invocation{Headers: f.headers, InvocationID: f.invocationID, Target: f.target, Arguments: a, StreamIDs: f.streamIDs}, nil
	case TypeStreamInvocation:
		if err := requireID("stream invocation"); err != nil {
			return nil, err
		}
		a, err := args("stream invocation")
		if err != nil {
			return nil, err
		}
		return &StreamInvocation{Headers: f.headers, InvocationID: f.invocationID, Target: f.target, Arguments: a, StreamIDs: f.streamIDs}, nil
	case TypeStreamItem:
		if err := requireID("stream item"); err != nil {
			return nil, err
		}
		if !f.hasItem {
			return nil, errors.New(`protocol: stream item: missing "item"`)
		}
		return &StreamItem{Headers: f.headers, InvocationID: f.invocationID, Item: raw(f.itemStart, len(f.item))}, nil
	case TypeCompletion:
		if err := requireID("completion"); err != nil {
			return nil, err
		}
		if f.hasErr && f.hasResult {
			return nil, errors.New(`protocol: completion: "error" and "result" are mutually exclusive`)
		}
		c := &Completion{Headers: f.headers, InvocationID: f.invocationID, Error: f.errMsg}
		if f.hasResult {
			c.HasResult = true
			c.Result = raw(f.resultStart, len(f.result))
		}
		return c, nil
	case TypeCancelInvocation:
		if err := requireID("cancel invocation"); err != nil {
			return nil, err
		}
		return &CancelInvocation{Headers: f.headers, InvocationID: f.invocationID}, nil
	case TypePing:
		return &Ping{}, nil
	case TypeClose:
		return &Close{Error: f.errMsg, AllowReconnect: f.allowReconnect}, nil
	case TypeAck:
		if !f.hasSeq {
			return nil, errors.New(`protocol: ack: missing "sequenceId"`)
		}
		return &Ack{SequenceID: f.sequenceID}, nil
	case TypeSequence:
		if !f.hasSeq {
			return nil, errors.New(`protocol: sequence: missing "sequenceId"`)
		}
		return &Sequence{SequenceID: f.sequenceID}, nil
	}
	return nil, fmt.Errorf("%w: %d", ErrUnknownMessageType, f.typ)
}

// AppendMessage implements HubProtocol. On error dst is returned unchanged.
func (jsonProtocol) AppendMessage(dst []byte, m Message) ([]byte, error) {
	orig := len(dst)
	out, err := appendJSONMessage(dst, m)
	if err != nil {
		return dst[:orig], err
	}
	return out, nil
}

func appendJSONType(dst []byte, t MessageType) []byte {
	dst = append(dst, `{"type":`...)
	return strconv.AppendInt(dst, int64(t), 10)
}

func appendJSONHeadersAndID(dst []byte, h map[string]string, id string) []byte {
	if len(h) > 0 {
		dst = append(dst, `,"headers":{`...)
		first := true
		for k, v := range h {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, v)
		}
		dst = append(dst, '}')
	}
	if id != "" {
		dst = append(dst, `,"invocationId":`...)
		dst = appendJSONString(dst, id)
	}
	return dst
}

func appendJSONInvocationBody(dst []byte, target string, args []any, streamIDs []string) ([]byte, error) {
	dst = append(dst, `,"target":`...)
	dst = appendJSONString(dst, target)
	dst = append(dst, `,"arguments":[`...)
	var err error
	for i, a := range args {
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, err = appendJSONValue(dst, a); err != nil {
			return dst, fmt.Errorf("protocol: json: argument %d: %w", i, err)
		}
	}
	dst = append(dst, ']')
	if len(streamIDs) > 0 {
		dst = append(dst, `,"streamIds":[`...)
		for i, s := range streamIDs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, s)
		}
		dst = append(dst, ']')
	}
	return dst, nil
}

func appendJSONMessage(dst []byte, m Message) ([]byte, error) {
	var err error
	switch m := m.(type) {
	case *Invocation:
		dst = appendJSONType(dst, TypeInvocation)
		dst = appendJSONHeadersAndID(dst, m.Headers, m.InvocationID)
		if dst, err = appendJSONInvocationBody(dst, m.Target, m.Arguments, m.StreamIDs); err != nil {
			return dst, err
		}
	case *StreamInvocation:
		dst = appendJSONType(dst, TypeStreamInvocation)
		dst = appendJSONHeadersAndID(dst, m.Headers, m.InvocationID)
		if dst, err = appendJSONInvocationBody(dst, m.Target, m.Arguments, m.StreamIDs); err != nil {
			return dst, err
		}
	case *StreamItem:
		dst = appendJSONType(dst, TypeStreamItem)
		dst = appendJSONHeadersAndID(dst, m.Headers, m.InvocationID)
		dst = append(dst, `,"item":`...)
		if dst, err = appendJSONValue(dst, m.Item); err != nil {
			return dst, fmt.Errorf("protocol: json: stream item: %w", err)
		}
	case *Completion:
		dst = appendJSONType(dst, TypeCompletion)
		dst = appendJSONHeadersAndID(dst, m.Headers, m.InvocationID)
		switch {
		case m.Error != "":
			dst = append(dst, `,"error":`...)
			dst = appendJSONString(dst, m.Error)
		case m.HasResult:
			dst = append(dst, `,"result":`...)
			if dst, err = appendJSONValue(dst, m.Result); err != nil {
				return dst, fmt.Errorf("protocol: json: completion result: %w", err)
			}
		}
	case *CancelInvocation:
		dst = appendJSONType(dst, TypeCancelInvocation)
		dst = appendJSONHeadersAndID(dst, m.Headers, m.InvocationID)
	case *Ping:
		dst = append(dst, `{"type":6`...)
	case *Close:
		dst = appendJSONType(dst, TypeClose)
		if m.Error != "" {
			dst = append(dst, `,"error":`...)
			dst = appendJSONString(dst, m.Error)
		}
		if m.AllowReconnect {
			dst = append(dst, `,"allowReconnect":true`...)
		}
	case *Ack:
		dst = appendJSONType(dst, TypeAck)
		dst = append(dst, `,"sequenceId":`...)
		dst = strconv.AppendInt(dst, m.SequenceID, 10)
	case *Sequence:
		dst = appendJSONType(dst, TypeSequence)
		dst = append(dst, `,"sequenceId":`...)
		dst = strconv.AppendInt(dst, m.SequenceID, 10)
	default:
		return dst, fmt.Errorf("protocol: json: cannot encode message of type %T", m)
	}
	return append(dst, '}', RecordSeparator), nil
}

// jsonEncState is a pooled encoder for argument values that need reflection.
type jsonEncState struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var jsonEncPool = sync.Pool{New: func() any {
	s := &jsonEncState{}
	s.enc = json.NewEncoder(&s.buf)
	s.enc.SetEscapeHTML(false)
	return s
}}

// appendJSONValue appends the JSON encoding of one argument/item/result.
func appendJSONValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case RawValue:
		if len(v) == 0 {
			return dst, errors.New("empty RawValue")
		}
		return append(dst, v...), nil
	case nil:
		return append(dst, "null"...), nil
	case string:
		return appendJSONString(dst, v), nil
	case bool:
		return strconv.AppendBool(dst, v), nil
	case int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int8:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int16:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(dst, v, 10), nil
	case uint:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case uint8:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case uint16:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case uint64:
		return strconv.AppendUint(dst, v, 10), nil
	}
	s := jsonEncPool.Get().(*jsonEncState)
	s.buf.Reset()
	err := s.enc.Encode(v)
	if err == nil {
		b := s.buf.Bytes()
		dst = append(dst, b[:len(b)-1]...) // drop Encode's trailing newline
	}
	if s.buf.Cap() <= 64<<10 {
		jsonEncPool.Put(s)
	}
	return dst, err
}

// Unmarshal implements HubProtocol.
func (jsonProtocol) Unmarshal(raw RawValue, v any) error {
	switch p := v.(type) {
	case *RawValue:
		*p = append(RawValue(nil), raw...)
		return nil
	case *string:
		if s, ok := plainJSONString(raw); ok {
			*p = s
			return nil
		}
	case *any:
		if s, ok := plainJSONString(raw); ok {
			*p = s
			return nil
		}
		x, err := decodeJSONAny(raw)
		if err != nil {
			return err
		}
		*p = x
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("protocol: json: %w", err)
	}
	return nil
}

// decodeJSONAny decodes one JSON value of any shape, numbers as int64
// (integers that fit) or float64.
func decodeJSONAny(raw RawValue) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return nil, fmt.Errorf("protocol: json: %w", err)
	}
	if dec.More() || int(dec.InputOffset()) != len(bytes.TrimRight(raw, " \t\r\n")) {
		return nil, errors.New("protocol: json: trailing data after value")
	}
	return jsonNumbers(x), nil
}

// plainJSONString decodes raw when it is one JSON string without escapes:
// quotes around bytes that hold no quote, backslash or control character.
// It reports false for anything else, which the general decoder then
// handles (or refuses). The decoding is jsonDecodeString's.
func plainJSONString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	for _, c := range raw[1 : len(raw)-1] {
		if c < 0x20 || c == '"' || c == '\\' {
			return "", false
		}
	}
	s, err := jsonDecodeString(raw, false)
	return s, err == nil
}

// jsonNumbers replaces json.Number values with int64 (integers that fit) or
// float64, recursively, in place.
func jsonNumbers(x any) any {
	switch x := x.(type) {
	case json.Number:
		s := string(x)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
		f, _ := strconv.ParseFloat(s, 64)
		return f
	case map[string]any:
		for k, v := range x {
			x[k] = jsonNumbers(v)
		}
	case []any:
		for i, v := range x {
			x[i] = jsonNumbers(v)
		}
	}
	return x
}
