// Package protocol implements the SignalR wire formats as pure functions over
// bytes: the negotiate response, the handshake, the JSON and MessagePack hub
// protocols and their record framing. It performs no I/O and holds no state,
// so every function is safe for concurrent use.
package protocol

import "errors"

// MessageType is the numeric "type" of a hub message, as SignalR defines it.
type MessageType int

// The hub message types of the SignalR hub protocol (HubProtocolConstants).
const (
	TypeInvocation       MessageType = 1
	TypeStreamItem       MessageType = 2
	TypeCompletion       MessageType = 3
	TypeStreamInvocation MessageType = 4
	TypeCancelInvocation MessageType = 5
	TypePing             MessageType = 6
	TypeClose            MessageType = 7
	TypeAck              MessageType = 8
	TypeSequence         MessageType = 9
)

// RecordSeparator terminates every JSON record and the handshake (ASCII RS).
const RecordSeparator byte = 0x1e

// Message is one hub message. The concrete types are the pointer types below
// (*Invocation, *StreamItem, ...).
type Message interface {
	// MessageType reports the SignalR type number of the message.
	MessageType() MessageType
}

// RawValue is an argument, stream item or result exactly as the peer encoded
// it (a JSON token, or one MessagePack object). Parsers produce RawValues;
// bind one to a Go value with the Unmarshal method of the protocol that parsed
// it. Encoders write a RawValue verbatim, so it must only be passed to the
// protocol that produced it.
type RawValue []byte

// Invocation asks the peer to run Target with Arguments. An empty
// InvocationID means the caller expects no Completion (a non-blocking send).
// StreamIDs name client-to-server upload streams bound to parameters.
// When parsed, each element of Arguments is a RawValue.
type Invocation struct {
	Headers      map[string]string
	InvocationID string
	Target       string
	Arguments    []any
	StreamIDs    []string
}

// StreamInvocation asks the server to run Target and stream its results back
// as StreamItems followed by a Completion. Sent by clients only.
type StreamInvocation struct {
	Headers      map[string]string
	InvocationID string
	Target       string
	Arguments    []any
	StreamIDs    []string
}

// StreamItem carries one item of a stream. When parsed, Item is a RawValue
// (possibly the encoding of null).
type StreamItem struct {
	Headers      map[string]string
	InvocationID string
	Item         any
}

// Completion ends an invocation or a stream. Exactly one of these holds:
// Error != "" (failure), HasResult (a value, possibly nil), or neither (void).
// When parsed with HasResult, Result is a RawValue.
type Completion struct {
	Headers      map[string]string
	InvocationID string
	Error        string
	Result       any
	HasResult    bool
}

// CancelInvocation asks the server to stop a stream. Sent by clients only.
type CancelInvocation struct {
	Headers      map[string]string
	InvocationID string
}

// Ping keeps the connection alive; it carries nothing.
type Ping struct{}

// Close announces that the sender is closing the connection, optionally with
// an error and whether the client may reconnect automatically.
type Close struct {
	Error          string
	AllowReconnect bool
}

// Ack acknowledges trackable messages up to SequenceID (stateful reconnect).
type Ack struct{ SequenceID int64 }

// Sequence announces the id of the next trackable message (stateful reconnect).
type Sequence struct{ SequenceID int64 }

// MessageType implements Message.
func (*Invocation) MessageType() MessageType { return TypeInvocation }

// MessageType implements Message.
func (*StreamInvocation) MessageType() MessageType { return TypeStreamInvocation }

// MessageType implements Message.
func (*StreamItem) MessageType() MessageType { return TypeStreamItem }

// MessageType implements Message.
func (*Completion) MessageType() MessageType { return TypeCompletion }

// MessageType implements Message.
func (*CancelInvocation) MessageType() MessageType { return TypeCancelInvocation }

// MessageType implements Message.
func (*Ping) MessageType() MessageType { return TypePing }

// MessageType implements Message.
func (*Close) MessageType() MessageType { return TypeClose }

// MessageType implements Message.
func (*Ack) MessageType() MessageType { return TypeAck }

// MessageType implements Message.
func (*Sequence) MessageType() MessageType { return TypeSequence }

// TransferFormat is the kind of WebSocket frame a protocol needs.
type TransferFormat int

// Transfer formats, numbered as in SignalR.
const (
	TransferText   TransferFormat = 1
	TransferBinary TransferFormat = 2
)

// String returns "Text" or "Binary", the names used on the wire.
func (f TransferFormat) String() string {
	if f == TransferBinary {
		return "Binary"
	}
	return "Text"
}

// HubProtocol encodes and decodes hub messages in one wire format.
// Implementations are stateless and safe for concurrent use.
type HubProtocol interface {
	// Name is the protocol name used in the handshake ("json", "messagepack").
	Name() string
	// Version is the highest protocol version supported (2).
	Version() int
	// TransferFormat is the WebSocket frame kind the protocol needs.
	TransferFormat() TransferFormat
	// ParseMessages decodes every complete record at the start of data and
	// returns the messages and the number of bytes consumed. A trailing
	// partial record is left unconsumed (the caller keeps it and appends more
	// input). A record that is complete but malformed yields an error that
	// says what is wrong; messages decoded before it are returned with it.
	// maxMessageSize (> 0) bounds a single record, including a partial one
	// still waiting for bytes: exceeding it is ErrMessageTooLarge.
	// Unknown message types are an error wrapping ErrUnknownMessageType.
	ParseMessages(data []byte, maxMessageSize int) (msgs []Message, consumed int, err error)
	// AppendMessage appends the framed encoding of m to dst (a JSON record
	// ending in RS, or a length-prefixed MessagePack array).
	AppendMessage(dst []byte, m Message) ([]byte, error)
	// Unmarshal binds a RawValue produced by this protocol's ParseMessages to
	// the Go value v points to.
	Unmarshal(raw RawValue, v any) error
}

// Errors returned by the parsers; compare with errors.Is.
var (
	// ErrMessageTooLarge means a record exceeds the configured maximum size.
	ErrMessageTooLarge = errors.New("protocol: message exceeds the maximum size")
	// ErrUnknownMessageType means a record has a type number this side does not handle.
	ErrUnknownMessageType = errors.New("protocol: unknown message type")
	// ErrIncomplete means the input ended before a complete handshake record.
	ErrIncomplete = errors.New("protocol: incomplete message")
)
