//go:build linux && (amd64 || arm64)

package transport

import (
	"log/slog"
	"sync"
	"syscall"
)

// canPark is true: idlePoller.park parks a connection unless its socket
// is closed or an epoll set cannot be made or waited on.
const canPark = true

// idlePoller holds the server's quiet WebSocket connections without a
// goroutine each. A goroutine costs its stack (4 KiB or more once it has
// read a frame through coder/websocket) for as long as it waits; here one
// goroutine waits for all parked connections in an epoll set of their
// sockets (one-shot registrations) and starts a reading goroutine
// (wsConnection.readFrames) for each one whose client spoke, closed or
// failed, or that the node closed (unpark).
//
// The waiting goroutine runs only while connections are parked: it ends,
// closing its epoll set, when the last one leaves, and park starts a new
// one. The descriptors are only used while the runtime holds them open
// (syscall.RawConn.Control), and an event names a park (a token), never a
// descriptor, so a closed socket's number taken by a new one cannot wake
// the wrong connection. idlePoller is safe for concurrent use.
type idlePoller struct {
	log *slog.Logger

	mu          sync.Mutex
	running     bool                     // a loop goroutine waits on epfd
	epfd        int                      // the running loop's epoll set
	wakeW       int                      // the write end of the pipe in epfd: a byte wakes the loop
	gen         uint64                   // counts the epoll sets made; a connection registered in an older one is added again
	next        uint64                   // the last park token
	parked      map[uint64]*wsConnection // by park token
	broken      error                    // set once waiting on the epoll set failed: nothing parks any more
	startFailed bool                     // the last attempt to make an epoll set failed (logged once per run of failures)
	onPark      func(*wsConnection)      // tests: called (under mu) after a connection parked
}

// wakeToken is the event data of the wake pipe; park tokens start at 1.
const wakeToken = 0

// park registers wc's socket for its next bytes and reports whether it
// did; when it did, the caller's goroutine must leave wc alone (the poller
// starts a new reader). It fails for a socket closed here (Control does).
func (p *idlePoller) park(wc *wsConnection) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken != nil {
		return false
	}
	if !p.running {
		if err := p.startLocked(); err != nil {
			// Perhaps out of descriptors for now: this connection keeps its
			// reader, and the next park tries again.
			if !p.startFailed {
				p.startFailed = true
				p.log.Warn("quiet connections keep a goroutine each while their epoll set cannot be made", "err", err)
			}
			return false
		}
		p.startFailed = false
	}
	p.next++
	tok := p.next
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(tok), Pad: int32(tok >> 32)}
	var err error
	cerr := wc.waiter.raw.Control(func(fd uintptr) {
		// Re-armed in the set it was added to, added to a new set.
		if wc.pollGen == p.gen {
			if err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev); err != syscall.ENOENT {
				return
			}
		}
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if cerr != nil || err != nil {
		// The socket is closed (cerr) or cannot be polled: the caller
		// reads it, and learns which.
		if len(p.parked) == 0 {
			p.wakeLocked() // the loop started for this park ends
		}
		return false
	}
	wc.pollGen = p.gen
	wc.parkToken = tok
	p.parked[tok] = wc
	if p.onPark != nil {
		p.onPark(wc)
	}
	return true
}

// unpark starts a reader for wc if wc is parked: the node closed its
// socket, which takes it out of the epoll set without an event.
func (p *idlePoller) unpark(wc *wsConnection) {
	p.mu.Lock()
	parked := p.running && p.parked[wc.parkToken] == wc
	if parked {
		delete(p.parked, wc.parkToken)
		if len(p.parked) == 0 {
			p.wakeLocked()
		}
	}
	p.mu.Unlock()
	if parked {
		go wc.readFrames()
	}
}

// startLocked makes an epoll set with the wake pipe in it and starts the
// loop waiting on it.
func (p *idlePoller) startLocked() error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	var pipe [2]int
	if err := syscall.Pipe2(pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeToken}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pipe[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(pipe[0])
		syscall.Close(pipe[1])
		return err
	}
	if p.parked == nil {
		p.parked = make(map[uint64]*wsConnection)
	}
	p.running, p.epfd, p.wakeW = true, epfd, pipe[1]
	p.gen++
	go p.loop(epfd, pipe[0], pipe[1])
	return nil
}

// wakeLocked makes the loop look at the parked connections again (it ends
// when there are none).
func (p *idlePoller) wakeLocked() {
	_, _ = syscall.Write(p.wakeW, []byte{1}) // a full pipe is awake already
}

// loop waits on epfd until no connection is parked, starting a reader for
// each connection whose socket became readable; then it closes the set
// and the pipe.
func (p *idlePoller) loop(epfd, wakeR, wakeW int) {
	defer func() {
		syscall.Close(epfd)
		syscall.Close(wakeR)
		syscall.Close(wakeW)
	}()
	events := make([]syscall.EpollEvent, 128)
	var ready []*wsConnection
	var drain [64]byte
	for {
		n, err := syscall.EpollWait(epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		p.mu.Lock()
		if err != nil {
			// Not expected; the parked connections are handed back to
			// readers of their own rather than left waiting forever.
			p.broken = err
			p.log.Error("waiting for idle connections failed; they keep a goroutine each from now on", "err", err)
			for tok, wc := range p.parked {
				ready = append(ready, wc)
				delete(p.parked, tok)
			}
		}
		for _, ev := range events[:max(n, 0)] {
			tok := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if tok == wakeToken {
				for {
					if k, _ := syscall.Read(wakeR, drain[:]); k <= 0 {
						break
					}
				}
				continue
			}
			if wc := p.parked[tok]; wc != nil {
				delete(p.parked, tok)
				ready = append(ready, wc)
			}
		}
		done := len(p.parked) == 0
		if done {
			p.running = false
		}
		p.mu.Unlock()
		for i, wc := range ready {
			go wc.readFrames()
			ready[i] = nil
		}
		ready = ready[:0]
		if done {
			return
		}
	}
}
