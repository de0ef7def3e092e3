package actors

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/internal/metrics"
)

// Mailbox kinds whose depths a node exports.
const (
	MailboxHub    = "hub"
	MailboxGroup  = "group"
	MailboxBridge = "bridge"
)

// trackMailbox gives props protoactor's default (unbounded) mailbox,
// tracked under ref, so its depth is read at scrape time without any cost
// per message. A nil ref leaves props as they are.
func trackMailbox(props *actor.Props, ref *metrics.MailboxRef) *actor.Props {
	if ref == nil {
		return props
	}
	unbounded := actor.Unbounded()
	return props.Configure(actor.WithMailbox(func() actor.Mailbox {
		mb := unbounded()
		ref.Set(mb)
		return mb
	}))
}
