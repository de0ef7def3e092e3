// Package backplane defines how hubfabric nodes exchange messages: the
// Backplane interface and its contract, and Memory, the in-process
// implementation every node uses unless it is given another one.
//
// A backplane moves opaque payloads on named channels between nodes. It
// knows nothing about hubs, actors or SignalR; the node's bridge actor turns
// payloads into actor messages through a Handler.
package backplane

import (
	"context"
	"errors"
)

// Message is one publication: an opaque payload on a named channel.
type Message struct {
	Channel string
	Payload []byte
}

// Handler receives what a Backplane delivers. The Backplane calls both
// methods from a single goroutine at a time, so a Handler needs no locking of
// its own for calls from one Backplane; it must not block for long, since it
// holds up every later delivery.
type Handler interface {
	// HandleMessage is called once per message published on a channel this
	// backplane is subscribed to, including messages this backplane itself
	// published. The payload is owned by the handler after the call.
	HandleMessage(channel string, payload []byte)
	// HandleEvent reports a change of the backplane's health.
	HandleEvent(Event)
}

// EventKind classifies an Event.
type EventKind int

const (
	// EventDown: the backplane lost its connection; publishes fail until
	// EventRestored.
	EventDown EventKind = iota + 1
	// EventRestored: the connection is back and every subscription is in
	// effect again.
	EventRestored
	// EventGap: a subscription was re-established after a drop; messages
	// published on Channels in between may have been missed.
	EventGap
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventDown:
		return "down"
	case EventRestored:
		return "restored"
	case EventGap:
		return "gap"
	}
	return "unknown"
}

// Event is a health change reported to the Handler.
type Event struct {
	Kind     EventKind
	Err      error    // the cause, for EventDown
	Channels []string // the channels affected, for EventGap
}

// Backplane is a publish/subscribe transport between nodes.
//
// Contract, which every implementation passes (see backplanetest):
//   - Delivery is at most once: a message reaches each subscribed Handler
//     once or not at all; it is never duplicated.
//   - Order: messages published by one Backplane on one channel, in one
//     Publish call or in successive calls, are delivered to every subscriber
//     in that order.
//   - Subscribe returns only once the subscription is in effect: a message
//     published (by anyone) after Subscribe returned is delivered, while the
//     backplane stays healthy. Unsubscribe returns once no further message on
//     those channels will be delivered.
//   - A Subscribe made while the transport is unreachable returns an error
//     wrapping ErrUnavailable (what is published meanwhile is missed), and
//     is kept, as is an Unsubscribe: when the transport is back the
//     backplane is subscribed as last asked, without the caller repeating
//     the change.
//   - Publish returns nil only when every message was handed to the
//     transport; otherwise it returns an error wrapping ErrUnavailable (or
//     ctx's error) and the caller must treat the messages as not delivered.
//     It never blocks past ctx's deadline.
//   - Loss is never silent: if a subscription was interrupted, the Handler
//     gets EventDown and, when it is back, EventGap naming the channels.
//   - All methods are safe for concurrent use. Start is called once, before
//     the others; Close is idempotent, after it every method returns
//     ErrClosed and no Handler call starts. A Backplane does not close
//     clients it was given by its caller.
type Backplane interface {
	// Start begins delivering to h. It is called exactly once.
	Start(ctx context.Context, h Handler) error
	// Publish hands msgs to the transport, in order.
	Publish(ctx context.Context, msgs []Message) error
	// Subscribe adds channels; it is idempotent per channel.
	Subscribe(ctx context.Context, channels ...string) error
	// Unsubscribe removes channels; unknown channels are ignored.
	Unsubscribe(ctx context.Context, channels ...string) error
	// Close stops delivery and releases resources. It is idempotent.
	Close() error
}

// Errors shared by every implementation; compare with errors.Is.
var (
	// ErrClosed means the Backplane was closed.
	ErrClosed = errors.New("backplane: closed")
	// ErrUnavailable means the transport cannot be reached right now; the
	// operation did not take effect.
	ErrUnavailable = errors.New("backplane: unavailable")
)

// Audience is an optional ability of a Backplane: it knows, exactly and
// cheaply, whether any other backplane is subscribed to a channel. A node
// then neither marshals nor publishes a send that no other node would
// receive. Memory implements it; Redis cannot know and does not.
type Audience interface {
	// OthersSubscribed reports whether a backplane other than this one is
	// subscribed to channel now. A subscription that completes after it
	// returned false may miss a message published on that answer, exactly
	// as if it had completed after the publish. Safe for concurrent use;
	// it does not block.
	OthersSubscribed(channel string) bool
}

// ChannelOrder is an optional ability of a Backplane: it says whether every
// subscriber of a channel gets that channel's messages in one order, the
// same for all, whichever nodes published them. Moving a connection
// between nodes relies on it (a marker published on a channel splits what
// the old and the new owner deliver); a node refuses the move when its
// backplane lacks it or says false.
type ChannelOrder interface {
	// OneOrderPerChannel reports whether the order holds now. Safe for
	// concurrent use; it does not block.
	OneOrderPerChannel() bool
}

// SharedSecrets is an optional ability of a Backplane: nodes on the same
// transport and channel prefix agree on a secret value through it, without
// configuration. A node uses it for its connection-token key when none was
// given, so a client may negotiate with one node and connect to another.
type SharedSecrets interface {
	// SharedSecret returns the secret stored under name, storing proposal
	// first if there is none (the first proposal wins, atomically, and
	// every later caller gets that one). Safe for concurrent use; it
	// blocks until ctx ends at most, and fails with an error wrapping
	// ErrUnavailable when the transport cannot be reached.
	SharedSecret(ctx context.Context, name string, proposal []byte) ([]byte, error)
}

// Wrapper is implemented by a Backplane that wraps another one (to take
// some channels for itself, say). Ability finds the optional abilities of
// the wrapped backplane through it, so a wrapper need not repeat every
// optional interface.
type Wrapper interface {
	// Unwrap returns the wrapped backplane.
	Unwrap() Backplane
}

// Ability returns b as a T (an optional ability such as Audience or
// SharedSecrets) when b has it, or else the first backplane that has it
// along b's chain of Wrappers. The ability's methods are then called on
// that backplane directly, so a wrapper must not need to see those calls.
func Ability[T any](b Backplane) (T, bool) {
	for b != nil {
		if t, ok := b.(T); ok {
			return t, true
		}
		w, ok := b.(Wrapper)
		if !ok {
			break
		}
		b = w.Unwrap()
	}
	var zero T
	return zero, false
}
