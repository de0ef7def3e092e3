package transport

import (
	"context"
	"log/slog"
)

// connLogger returns base with a connection's identity (hub, conn_id and,
// when not empty, transport) on every record. It holds three strings per
// connection where base.With would format and keep the attributes up
// front (~240 B per connection, though most connections never log); the
// attributes are added when a record is logged. The output is the same as
// base.With's. Safe for concurrent use, as base is.
func connLogger(base *slog.Logger, hub, connID, transport string) *slog.Logger {
	return slog.New(&connHandler{next: base.Handler(), hub: hub, connID: connID, transport: transport})
}

// connHandler is connLogger's slog.Handler.
type connHandler struct {
	next                   slog.Handler
	hub, connID, transport string
}

func (h *connHandler) attrs() []slog.Attr {
	as := []slog.Attr{slog.String("hub", h.hub), slog.String("conn_id", h.connID)}
	if h.transport != "" {
		as = append(as, slog.String("transport", h.transport))
	}
	return as
}

// Enabled reports whether the wrapped handler takes records of level l.
func (h *connHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle passes r on with the connection's attributes before its own.
func (h *connHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(h.attrs()...)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs returns the wrapped handler with the connection's attributes
// and as, in that order.
func (h *connHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return h.next.WithAttrs(append(h.attrs(), as...))
}

// WithGroup returns the wrapped handler with the connection's attributes,
// then the group.
func (h *connHandler) WithGroup(name string) slog.Handler {
	return h.next.WithAttrs(h.attrs()).WithGroup(name)
}
