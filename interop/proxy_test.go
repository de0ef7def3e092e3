package interop

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// cutProxy is a TCP proxy for the stateful-reconnect tests: it forwards each accepted
// connection to the current target, and its control endpoint (ctl) lets the JS scenarios cut
// every forwarded connection (POST /cut, with ?hold=1 new connections are accepted but wait),
// and let held connections go on (POST /resume, with ?target=N to send them to target N from
// then on). Everything it starts is stopped and joined in t.Cleanup.
type cutProxy struct {
	ln      net.Listener
	ctl     *httptest.Server
	targets []string

	mu      sync.Mutex
	target  int
	hold    bool
	held    chan struct{} // closed on resume
	live    map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
	cuts    int
	resumes int
}

// startCutProxy listens on a loopback port in front of targets (host:port), forwarding to the
// first one.
func startCutProxy(t *testing.T, targets ...string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, targets: targets, live: map[net.Conn]struct{}{}, held: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /cut", func(w http.ResponseWriter, r *http.Request) {
		p.cut(r.URL.Query().Get("hold") == "1")
	})
	mux.HandleFunc("POST /resume", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("target") {
		case "", "1":
			p.resume(0)
		case "2":
			p.resume(1)
		default:
			http.Error(w, "target is 1 or 2", http.StatusBadRequest)
		}
	})
	p.ctl = httptest.NewServer(mux)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// addr is where clients connect.
func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.live[c] = struct{}{}
		hold, held := p.hold, p.held
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c, hold, held)
	}
}

func (p *cutProxy) serve(c net.Conn, hold bool, held chan struct{}) {
	defer p.wg.Done()
	defer p.forget(c)
	if hold {
		<-held
	}
	p.mu.Lock()
	target, closed := p.targets[p.target], p.closed
	p.mu.Unlock()
	if closed {
		return
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		up.Close()
		return
	}
	p.live[up] = struct{}{}
	p.mu.Unlock()
	defer p.forget(up)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); up.Close(); c.Close(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); up.Close(); c.Close(); done <- struct{}{} }()
	<-done
	<-done
}

func (p *cutProxy) forget(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.live, c)
	p.mu.Unlock()
}

// cut closes every forwarded connection (both sides, without a WebSocket close: a dropped
// network); with hold, new connections wait for resume.
func (p *cutProxy) cut(hold bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cuts++
	if hold && !p.hold {
		p.hold, p.held = true, make(chan struct{})
	}
	for c := range p.live {
		c.Close()
	}
}

func (p *cutProxy) resume(target int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resumes++
	p.target = target
	if p.hold {
		p.hold = false
		close(p.held)
	}
}

func (p *cutProxy) close() {
	p.ctl.Close()
	p.mu.Lock()
	p.closed = true
	if p.hold {
		p.hold = false
		close(p.held)
	}
	for c := range p.live {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
