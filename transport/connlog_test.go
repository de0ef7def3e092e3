package transport

import (
	"bytes"
	"log/slog"
	"testing"
)

// connLogger writes what base.With would, for plain records, records
// through a further With and through a group, at any level the base
// takes, and nothing below it.
func TestConnLoggerWritesWhatWithWould(t *testing.T) {
	for _, transport := range []string{"", "longPolling"} {
		t.Run("transport="+transport, func(t *testing.T) {
			var got, want bytes.Buffer
			noTime := func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}
			newBase := func(b *bytes.Buffer) *slog.Logger {
				return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: noTime})).WithGroup("node")
			}
			lazy := connLogger(newBase(&got), "chat", "c1", transport)
			args := []any{"hub", "chat", "conn_id", "c1"}
			if transport != "" {
				args = append(args, "transport", transport)
			}
			eager := newBase(&want).With(args...)
			for _, l := range []*slog.Logger{lazy, eager} {
				l.Info("opened", "n", 1)
				l.Debug("not written")
				l.With("k", "v").Warn("with", "n", 2)
				l.WithGroup("g").Error("grouped", "n", 3)
			}
			if got.String() != want.String() {
				t.Fatalf("connLogger wrote\n%s\nwant (base.With)\n%s", got.String(), want.String())
			}
			if got.Len() == 0 || bytes.Contains(got.Bytes(), []byte("not written")) {
				t.Fatalf("unexpected output\n%s", got.String())
			}
		})
	}
}
