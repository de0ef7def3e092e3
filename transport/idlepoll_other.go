//go:build !(linux && (amd64 || arm64))

package transport

import "log/slog"

// canPark is false: idlePoller.park never parks here.
const canPark = false

// idlePoller parks nothing here: each open WebSocket keeps its reading
// goroutine (idlepoll_linux.go holds quiet ones in an epoll set instead).
type idlePoller struct {
	log    *slog.Logger
	onPark func(*wsConnection)
}

// park reports that wc was not parked: its reader keeps it.
func (p *idlePoller) park(*wsConnection) bool { return false }

// unpark has nothing to do: no connection is parked.
func (p *idlePoller) unpark(*wsConnection) {}
