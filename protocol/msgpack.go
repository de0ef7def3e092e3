package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// MessagePack is the SignalR MessagePack hub protocol: name "messagepack",
// version 2, binary frames. Each message is a VarInt length prefix
// (little-endian base 128, at most 5 bytes, at most 2^31-1) followed by one
// MessagePack array laid out as in the ASP.NET Core MessagePackHubProtocol.
//
// ParseMessages accepts the shorter arrays the JS client writes (5-item
// Invocation/StreamInvocation without stream ids, 2-item Close), ignores
// extra trailing items, rejects arrays that are too short and returns
// arguments, stream items and results as RawValues holding the exact bytes of
// that one MessagePack object (copied). The size limit applies to the body
// (excluding the prefix). When a message is rejected, consumed covers the
// messages before it plus, when its length prefix was readable and the body
// complete, that message too; so a caller that wants to ignore
// ErrUnknownMessageType can continue after consumed.
//
// AppendMessage writes 6-item Invocation/StreamInvocation arrays (streamIds
// [] when none), nil for an empty non-blocking invocation id, headers as a
// map (0x80 when empty), Close as 3 items and Ping as exactly 0x02 0x91 0x06.
// RawValues are written verbatim; other values are encoded with
// vmihailenco/msgpack using json struct tags and compact integers
// (time.Time as the timestamp extension, []byte as bin).
//
// Unmarshal decodes with vmihailenco/msgpack using json struct tags, except
// that a *any target receives nil, bool, int64 (uint64 only above
// math.MaxInt64), float64, string, []byte, []any, map[string]any (non-string
// keys formatted with fmt.Sprint) or time.Time (in UTC), and a *RawValue target
// receives a copy of the raw bytes.
var MessagePack HubProtocol = msgpackProtocol{}

type msgpackProtocol struct{}

func (msgpackProtocol) Name() string                   { return "messagepack" }
func (msgpackProtocol) Version() int                   { return 2 }
func (msgpackProtocol) TransferFormat() TransferFormat { return TransferBinary }

// readVarInt reads the length prefix at data. ok is false when data ends
// before the prefix does.
func readVarInt(data []byte) (length uint64, n int, ok bool, err error) {
	for n < 5 {
		if n >= len(data) {
			return 0, 0, false, nil
		}
		b := data[n]
		if n == 4 && b > 7 {
			return 0, 0, false, errors.New("protocol: messagepack: length prefix exceeds 2^31-1 (messages bigger than 2GB are not supported)")
		}
		length |= uint64(b&0x7f) << (7 * n)
		n++
		if b&0x80 == 0 {
			return length, n, true, nil
		}
	}
	// Unreachable: the 5th byte is <= 7 and so has no continuation bit.
	return 0, 0, false, errors.New("protocol: messagepack: invalid length prefix")
}

// ParseMessages implements HubProtocol.
func (msgpackProtocol) ParseMessages(data []byte, maxMessageSize int) ([]Message, int, error) {
	var msgs []Message
	off := 0
	for off < len(data) {
		length, n, ok, err := readVarInt(data[off:])
		if err != nil {
			return msgs, off, err
		}
		if !ok {
			break
		}
		if maxMessageSize > 0 && length > uint64(maxMessageSize) {
			return msgs, off, fmt.Errorf("%w: MessagePack message of %d bytes, limit %d", ErrMessageTooLarge, length, maxMessageSize)
		}
		if length > uint64(len(data)-off-n) {
			break
		}
		body := data[off+n : off+n+int(length)]
		off += n + int(length)
		m, err := parseMsgpackBody(body)
		if err != nil {
			return msgs, off, err
		}
		msgs = append(msgs, m)
	}
	return msgs, off, nil
}

var msgpackTypeNames = [...]string{
	TypeInvocation:       "invocation",
	TypeStreamItem:       "stream item",
	TypeCompletion:       "completion",
	TypeStreamInvocation: "stream invocation",
	TypeCancelInvocation: "cancel invocation",
	TypePing:             "ping",
	TypeClose:            "close",
	TypeAck:              "ack",
	TypeSequence:         "sequence",
}

// minItems is the shortest array accepted per message type.
var msgpackMinItems = [...]int{
	TypeInvocation:       5,
	TypeStreamItem:       4,
	TypeCompletion:       4,
	TypeStreamInvocation: 5,
	TypeCancelInvocation: 3,
	TypePing:             1,
	TypeClose:            2,
	TypeAck:              2,
	TypeSequence:         2,
}

func parseMsgpackBody(body []byte) (Message, error) {
	if len(body) == 0 {
		return nil, errors.New("protocol: messagepack: empty message")
	}
	r := &mpReader{b: body}
	n, err := r.arrayLen()
	if err != nil {
		return nil, fmt.Errorf("protocol: messagepack: message must be an array: %w", err)
	}
	if n == 0 {
		return nil, errors.New("protocol: messagepack: empty array")
	}
	t, err := r.int64()
	if err != nil {
		return nil, fmt.Errorf("protocol: messagepack: message type: %w", err)
	}
	if t < 1 || t > int64(TypeSequence) {
		return nil, fmt.Errorf("%w: %d", ErrUnknownMessageType, t)
	}
	mt := MessageType(t)
	name := msgpackTypeNames[mt]
	if n < msgpackMinItems[mt] {
		return nil, fmt.Errorf("protocol: %s: array has %d items, want at least %d", name, n, msgpackMinItems[mt])
	}
	p := msgpackParser{r: r, body: body, name: name}
	m := p.message(mt, n)
	if p.err != nil {
		return nil, p.err
	}
	// Skip items added by future protocol versions.
	for i := p.items; i < n; i++ {
		if err := r.skip(); err != nil {
			return nil, fmt.Errorf("protocol: %s: item %d: %v", name, i, err)
		}
	}
	if r.i != len(body) {
		return nil, fmt.Errorf("protocol: %s: %d trailing bytes after the array", name, len(body)-r.i)
	}
	return m, nil
}

// msgpackParser reads the items of one message array, remembering the first
// error so the per-type code stays linear.
type msgpackParser struct {
	r     *mpReader
	body  []byte
	own   []byte // copy of body backing the RawValues
	name  string
	items int // items read so far, the type included
	err   error
}

func (p *msgpackParser) fail(what string, err error) {
	if p.err == nil {
		p.err = fmt.Errorf("protocol: %s: %s: %v", p.name, what, err)
	}
}

func (p *msgpackParser) headers() map[string]string {
	if p.err != nil {
		return nil
	}
	p.items++
	n, err := p.r.mapLen()
	if err != nil {
		p.fail("headers", err)
		return nil
	}
	if n == 0 {
		return nil
	}
	h := make(map[string]string, n)
	for range n {
		k, err := p.r.str()
		if err != nil {
			p.fail("header name", err)
			return nil
		}
		v, err := p.r.str()
		if err != nil {
			p.fail(fmt.Sprintf("header %q", k), err)
			return nil
		}
		h[k] = v
	}
	return h
}

func (p *msgpackParser) strOrNil(what string) string {
	if p.err != nil {
		return ""
	}
	p.items++
	s, _, err := p.r.strOrNil()
	if err != nil {
		p.fail(what, err)
	}
	return s
}

func (p *msgpackParser) requiredID() string {
	s := p.strOrNil("invocation id")
	if p.err == nil && s == "" {
		p.fail("invocation id", errors.New("missing"))
	}
	return s
}

func (p *msgpackParser) str(what string) string {
	if p.err != nil {
		return ""
	}
	p.items++
	s, err := p.r.str()
	if err != nil {
		p.fail(what, err)
	}
	return s
}

func (p *msgpackParser) int(what string) int64 {
	if p.err != nil {
		return 0
	}
	p.items++
	v, err := p.r.int64()
	if err != nil {
		p.fail(what, err)
	}
	return v
}

// raw returns the next object as a RawValue; idx >= 0 numbers the argument
// in errors (formatted only on failure, to keep the happy path allocation-free).
func (p *msgpackParser) raw(what string, idx int) RawValue {
	if p.err != nil {
		return nil
	}
	start := p.r.i
	if err := p.r.skip(); err != nil {
		if idx >= 0 {
			what = fmt.Sprintf("%s %d", what, idx)
		}
		p.fail(what, err)
		return nil
	}
	if p.own == nil {
		p.own = append([]byte(nil), p.body...)
	}
	return RawValue(p.own[start:p.r.i:p.r.i])
}

func (p *msgpackParser) args() []any {
	if p.err != nil {
		return nil
	}
	p.items++
	n, err := p.r.arrayLen()
	if err != nil {
		p.fail("arguments", err)
		return nil
	}
	out := make([]any, n)
	for i := range out {
		v := p.raw("argument", i)
		if p.err != nil {
			return nil
		}
		out[i] = v
	}
	return out
}

func (p *msgpackParser) streamIDs(n int) []string {
	if p.err != nil || n < 6 {
		return nil
	}
	p.items++
	if c, err := p.r.peek(); err == nil && c == 0xc0 {
		p.r.i++
		return nil
	}
	k, err := p.r.arrayLen()
	if err != nil {
		p.fail("stream ids", err)
		return nil
	}
	if k == 0 {
		return nil
	}
	ids := make([]string, k)
	for i := range ids {
		if ids[i], err = p.r.str(); err != nil {
			p.fail("stream ids", err)
			return nil
		}
	}
	return ids
}

func (p *msgpackParser) message(t MessageType, n int) Message {
	p.items = 1
	switch t {
	case TypeInvocation:
		m := &Invocation{}
		m.Headers = p.headers()
		m.InvocationID = p.strOrNil("invocation id")
		m.Target = p.str("target")
		m.Arguments = p.args()
		m.StreamIDs = p.streamIDs(n)
		return m
	case TypeStreamInvocation:
		m := &StreamInvocation{}
		m.Headers = p.headers()
		m.InvocationID = p.requiredID()
		m.Target = p.str("target")
		m.Arguments = p.args()
		m.StreamIDs = p.streamIDs(n)
		return m
	case TypeStreamItem:
		m := &StreamItem{}
		m.Headers = p.headers()
		m.InvocationID = p.requiredID()
		p.items++
		m.Item = p.raw("item", -1)
		return m
	case TypeCompletion:
		m := &Completion{}
		m.Headers = p.headers()
		m.InvocationID = p.requiredID()
		kind := p.int("result kind")
		if p.err != nil {
			return nil
		}
		switch kind {
		case 1:
			if n < 5 {
				p.fail("error", errors.New("missing (result kind 1 needs 5 items)"))
				return nil
			}
			m.Error = p.strOrNil("error")
		case 2:
		case 3:
			if n < 5 {
				p.fail("result", errors.New("missing (result kind 3 needs 5 items)"))
				return nil
			}
			p.items++
			m.Result = p.raw("result", -1)
			m.HasResult = true
		default:
			p.fail("result kind", fmt.Errorf("invalid value %d (want 1, 2 or 3)", kind))
		}
		return m
	case TypeCancelInvocation:
		m := &CancelInvocation{}
		m.Headers = p.headers()
		m.InvocationID = p.requiredID()
		return m
	case TypePing:
		return &Ping{}
	case TypeClose:
		m := &Close{}
		m.Error = p.strOrNil("error")
		if n >= 3 && p.err == nil {
			p.items++
			b, err := p.r.boolOrNil()
			if err != nil {
				p.fail("allowReconnect", err)
			}
			m.AllowReconnect = b
		}
		return m
	case TypeAck:
		return &Ack{SequenceID: p.int("sequence id")}
	case TypeSequence:
		return &Sequence{SequenceID: p.int("sequence id")}
	}
	return nil
}

// AppendMessage implements HubProtocol. On error dst is returned unchanged.
func (msgpackProtocol) AppendMessage(dst []byte, m Message) ([]byte, error) {
	if _, ok := m.(*Ping); ok {
		return append(dst, 0x02, 0x91, 0x06), nil
	}
	orig := len(dst)
	dst = append(dst, 0) // one prefix byte; grown below if the body needs more
	out, err := appendMsgpackBody(dst, m)
	if err != nil {
		return dst[:orig], err
	}
	bodyLen := len(out) - orig - 1
	if bodyLen > math.MaxInt32 {
		return dst[:orig], fmt.Errorf("protocol: messagepack: message of %d bytes exceeds 2^31-1", bodyLen)
	}
	var prefix [5]byte
	pn := 0
	for v := uint32(bodyLen); ; {
		b := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b |= 0x80
		}
		prefix[pn] = b
		pn++
		if v == 0 {
			break
		}
	}
	if pn > 1 {
		out = append(out, prefix[:pn-1]...) // grow
		copy(out[orig+pn:], out[orig+1:orig+1+bodyLen])
	}
	copy(out[orig:], prefix[:pn])
	return out, nil
}

func appendMPArrayLen(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(dst, 0xdc, byte(n>>8), byte(n))
	default:
		return append(dst, 0xdd, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func appendMPMapLen(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x80|byte(n))
	case n <= math.MaxUint16:
		return append(dst, 0xde, byte(n>>8), byte(n))
	default:
		return append(dst, 0xdf, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// appendMPString writes s the way vmihailenco/msgpack does (fixstr, str8,
// str16, str32).
func appendMPString(dst []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		dst = append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		dst = append(dst, 0xda, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, s...)
}

// appendMPUint and appendMPInt write the most compact integer encoding, as
// vmihailenco/msgpack does with UseCompactInts(true).
func appendMPUint(dst []byte, n uint64) []byte {
	switch {
	case n <= math.MaxInt8:
		return append(dst, byte(n))
	case n <= math.MaxUint8:
		return append(dst, 0xcc, byte(n))
	case n <= math.MaxUint16:
		return append(dst, 0xcd, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return append(dst, 0xce, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 0xcf), n)
	}
}

func appendMPInt(dst []byte, n int64) []byte {
	switch {
	case n >= 0:
		return appendMPUint(dst, uint64(n))
	case n >= -32:
		return append(dst, byte(n))
	case n >= math.MinInt8:
		return append(dst, 0xd0, byte(n))
	case n >= math.MinInt16:
		return append(dst, 0xd1, byte(n>>8), byte(n))
	case n >= math.MinInt32:
		return append(dst, 0xd2, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(n))
	}
}

func appendMPHeaders(dst []byte, h map[string]string) []byte {
	dst = appendMPMapLen(dst, len(h))
	for k, v := range h {
		dst = appendMPString(dst, k)
		dst = appendMPString(dst, v)
	}
	return dst
}

func appendMPStringOrNil(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, 0xc0)
	}
	return appendMPString(dst, s)
}

func appendMPInvocation(dst []byte, t MessageType, h map[string]string, id string, idOrNil bool, target string, args []any, streamIDs []string) ([]byte, error) {
	dst = append(dst, 0x96, byte(t))
	dst = appendMPHeaders(dst, h)
	if idOrNil {
		dst = appendMPStringOrNil(dst, id)
	} else {
		dst = appendMPString(dst, id)
	}
	dst = appendMPString(dst, target)
	dst = appendMPArrayLen(dst, len(args))
	var err error
	for i, a := range args {
		if dst, err = appendMPValue(dst, a); err != nil {
			return dst, fmt.Errorf("protocol: messagepack: argument %d: %w", i, err)
		}
	}
	dst = appendMPArrayLen(dst, len(streamIDs))
	for _, s := range streamIDs {
		dst = appendMPString(dst, s)
	}
	return dst, nil
}

func appendMsgpackBody(dst []byte, m Message) ([]byte, error) {
	var err error
	switch m := m.(type) {
	case *Invocation:
		return appendMPInvocation(dst, TypeInvocation, m.Headers, m.InvocationID, true, m.Target, m.Arguments, m.StreamIDs)
	case *StreamInvocation:
		return appendMPInvocation(dst, TypeStreamInvocation, m.Headers, m.InvocationID, false, m.Target, m.Arguments, m.StreamIDs)
	case *StreamItem:
		dst = append(dst, 0x94, byte(TypeStreamItem))
		dst = appendMPHeaders(dst, m.Headers)
		dst = appendMPString(dst, m.InvocationID)
		if dst, err = appendMPValue(dst, m.Item); err != nil {
			return dst, fmt.Errorf("protocol: messagepack: stream item: %w", err)
		}
		return dst, nil
	case *Completion:
		switch {
		case m.Error != "":
			dst = append(dst, 0x95, byte(TypeCompletion))
		case m.HasResult:
			dst = append(dst, 0x95, byte(TypeCompletion))
		default:
			dst = append(dst, 0x94, byte(TypeCompletion))
		}
		dst = appendMPHeaders(dst, m.Headers)
		dst = appendMPString(dst, m.InvocationID)
		switch {
		case m.Error != "":
			dst = append(dst, 1)
			dst = appendMPString(dst, m.Error)
		case m.HasResult:
			dst = append(dst, 3)
			if dst, err = appendMPValue(dst, m.Result); err != nil {
				return dst, fmt.Errorf("protocol: messagepack: completion result: %w", err)
			}
		default:
			dst = append(dst, 2)
		}
		return dst, nil
	case *CancelInvocation:
		dst = append(dst, 0x93, byte(TypeCancelInvocation))
		dst = appendMPHeaders(dst, m.Headers)
		return appendMPString(dst, m.InvocationID), nil
	case *Close:
		dst = append(dst, 0x93, byte(TypeClose))
		dst = appendMPStringOrNil(dst, m.Error)
		if m.AllowReconnect {
			return append(dst, 0xc3), nil
		}
		return append(dst, 0xc2), nil
	case *Ack:
		dst = append(dst, 0x92, byte(TypeAck))
		return appendMPInt(dst, m.SequenceID), nil
	case *Sequence:
		dst = append(dst, 0x92, byte(TypeSequence))
		return appendMPInt(dst, m.SequenceID), nil
	}
	return dst, fmt.Errorf("protocol: messagepack: cannot encode message of type %T", m)
}

// mpEncState is a pooled encoder for values that need reflection.
type mpEncState struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var mpEncPool = sync.Pool{New: func() any {
	s := &mpEncState{}
	s.enc = msgpack.NewEncoder(&s.buf)
	s.enc.SetCustomStructTag("json")
	s.enc.UseCompactInts(true)
	return s
}}

// appendMPValue appends the MessagePack encoding of one argument/item/result.
func appendMPValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case RawValue:
		if len(v) == 0 {
			return dst, errors.New("empty RawValue")
		}
		return append(dst, v...), nil
	case nil:
		return append(dst, 0xc0), nil
	case string:
		return appendMPString(dst, v), nil
	case bool:
		if v {
			return append(dst, 0xc3), nil
		}
		return append(dst, 0xc2), nil
	case int:
		return appendMPInt(dst, int64(v)), nil
	case int64:
		return appendMPInt(dst, v), nil
	case int32:
		return appendMPInt(dst, int64(v)), nil
	case uint64:
		return appendMPUint(dst, v), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(dst, 0xcb), math.Float64bits(v)), nil
	}
	s := mpEncPool.Get().(*mpEncState)
	s.buf.Reset()
	err := s.enc.Encode(v)
	if err == nil {
		dst = append(dst, s.buf.Bytes()...)
	}
	if s.buf.Cap() <= 64<<10 {
		mpEncPool.Put(s)
	}
	return dst, err
}

// Unmarshal implements HubProtocol.
func (msgpackProtocol) Unmarshal(raw RawValue, v any) error {
	switch p := v.(type) {
	case *RawValue:
		*p = append(RawValue(nil), raw...)
		return nil
	case *any:
		r := &mpReader{b: raw}
		x, err := r.toAny(0)
		if err == nil && r.i != len(raw) {
			err = errors.New("trailing data after value")
		}
		if err != nil {
			return fmt.Errorf("protocol: messagepack: %w", err)
		}
		*p = x
		return nil
	}
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(bytes.NewReader(raw))
	dec.SetCustomStructTag("json")
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("protocol: messagepack: %w", err)
	}
	return nil
}
