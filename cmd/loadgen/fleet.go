package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/hubfabric/hubfabric/protocol"
)

// fleet owns the client connections, their reader goroutines and the
// pinger.
type fleet struct {
	o    options
	urls []string
	d    *dialer
	w    *world

	mu      sync.Mutex
	clients []*client // connected so far, in no particular order

	readers  sync.WaitGroup
	stopPing chan struct{}
	pinger   sync.WaitGroup
}

func newFleet(o options, urls []string, phases int) *fleet {
	f := &fleet{
		o:        o,
		urls:     urls,
		d:        newDialer(o.token, o.negotiate, o.localAddrs),
		w:        &world{lat: make([]shardedHist, phases)},
		stopPing: make(chan struct{}),
	}
	f.pinger.Add(1)
	go f.pingLoop()
	return f
}

// slot says where client i connects and which group it joins (-1: none).
type slot struct{ node, group int }

// connectResult sums up a connect phase.
type connectResult struct {
	connected int
	errors    int
	firstErr  error
	seconds   float64
}

// connect opens n clients at most o.connectRate per second, with at most
// o.connectConcurrency in progress; a client with a group sends JoinGroup
// and waits for its completion. stopOnError stops at the first failure.
func (f *fleet) connect(ctx context.Context, n int, place func(i int) slot, groupName func(g int) string, phases int, stopOnError bool, progress io.Writer) (connectResult, map[int]*client, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		res     connectResult
		resMu   sync.Mutex
		byID    = make(map[int]*client, n)
		jobs    = make(chan int)
		workers sync.WaitGroup
		done    atomic.Int64
	)
	fail := func(err error) {
		resMu.Lock()
		res.errors++
		if res.firstErr == nil {
			res.firstErr = err
		}
		resMu.Unlock()
		if stopOnError {
			cancel()
		}
	}
	for range min(f.o.connectConcurrency, n) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := range jobs {
				c, err := f.open(ctx, i, place(i), groupName, phases)
				done.Add(1)
				if err != nil {
					if ctx.Err() == nil || !stopOnError {
						fail(fmt.Errorf("client %d: %w", i, err))
					}
					continue
				}
				resMu.Lock()
				byID[i] = c
				res.connected++
				resMu.Unlock()
			}
		}()
	}
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	if progress != nil {
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-progressDone:
					return
				case <-t.C:
					resMu.Lock()
					errs := res.errors
					resMu.Unlock()
					fmt.Fprintf(progress, "\rconnecting %d/%d  errors %d  %.0fs   ", done.Load(), n, errs, time.Since(start).Seconds())
				}
			}
		}()
	}
	interval := float64(time.Second) / f.o.connectRate
	timer := time.NewTimer(0)
	<-timer.C
feed:
	for i := range n {
		if d := time.Until(start.Add(time.Duration(float64(i) * interval))); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break feed
			}
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	workers.Wait()
	close(progressDone)
	progressWG.Wait()
	if progress != nil {
		fmt.Fprint(progress, "\r\033[K")
	}
	res.seconds = time.Since(start).Seconds()
	if res.firstErr == nil && ctx.Err() != nil && res.connected < n {
		return res, byID, context.Cause(ctx)
	}
	return res, byID, nil
}

// open connects client i, starts its reader and joins its group.
func (f *fleet) open(ctx context.Context, i int, s slot, groupName func(int) string, phases int) (*client, error) {
	ctx, cancel := context.WithTimeout(ctx, f.o.joinTimeout)
	defer cancel()
	ws, first, err := f.d.dial(ctx, f.urls[s.node])
	if err != nil {
		return nil, err
	}
	c := &client{
		id:     i,
		node:   s.node,
		group:  s.group,
		ws:     ws,
		w:      f.w,
		joined: make(chan error, 1),
		done:   make(chan struct{}),
		phases: make([]phaseCounts, phases),
	}
	f.readers.Add(1)
	go func() {
		defer f.readers.Done()
		c.readLoop(first)
	}()
	f.mu.Lock()
	f.clients = append(f.clients, c)
	f.mu.Unlock()
	if s.group < 0 {
		return c, nil
	}
	join, err := protocol.JSON.AppendMessage(nil, &protocol.Invocation{
		InvocationID: joinInvocationID,
		Target:       "JoinGroup",
		Arguments:    []any{groupName(s.group)},
	})
	if err != nil {
		return nil, err
	}
	if err := ws.Write(ctx, websocket.MessageText, join); err != nil {
		return nil, fmt.Errorf("JoinGroup: %w", err)
	}
	select {
	case err := <-c.joined:
		return c, err
	case <-ctx.Done():
		return nil, fmt.Errorf("JoinGroup: no completion: %w", ctx.Err())
	}
}

// pingLoop sends every client a Ping once per o.pingInterval, spread over
// the interval.
func (f *fleet) pingLoop() {
	defer f.pinger.Done()
	ping, _ := protocol.JSON.AppendMessage(nil, &protocol.Ping{})
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	wait := func(d time.Duration) bool {
		if d <= 0 {
			return true
		}
		timer.Reset(d)
		select {
		case <-timer.C:
			return true
		case <-f.stopPing:
			return false
		}
	}
	if !wait(f.o.pingInterval) {
		return
	}
	for {
		start := time.Now()
		f.mu.Lock()
		cs := append([]*client(nil), f.clients...)
		f.mu.Unlock()
		for i, c := range cs {
			if i%64 == 0 && !wait(time.Until(start.Add(f.o.pingInterval*time.Duration(i)/time.Duration(len(cs))))) {
				return
			}
			_ = c.ws.Write(context.Background(), websocket.MessageText, ping)
		}
		if !wait(time.Until(start.Add(f.o.pingInterval))) {
			return
		}
	}
}

// close closes every connection normally, waits for the readers and the
// pinger, and drops idle HTTP connections.
func (f *fleet) close() {
	f.w.closing.Store(true)
	close(f.stopPing)
	f.mu.Lock()
	cs := f.clients
	f.clients = nil
	f.mu.Unlock()
	jobs := make(chan *client)
	var wg sync.WaitGroup
	for range min(256, len(cs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range jobs {
				_ = c.ws.Close(websocket.StatusNormalClosure, "")
				_ = c.ws.CloseNow()
			}
		}()
	}
	for _, c := range cs {
		jobs <- c
	}
	close(jobs)
	wg.Wait()
	f.readers.Wait()
	f.pinger.Wait()
	f.d.close()
}
