// Command floornode is a measuring stick, not a server to run: the least
// work a node can do for the benchmark's cross-node group fan-out with the
// project's own dependencies (coder/websocket, go-redis), so a run of it
// beside Centrifugo shows what any hubfabric built on them could reach.
//
// It speaks just enough SignalR JSON for ../shared/bench's load generator:
// negotiate, the handshake, JoinGroup (answered once Redis confirmed the
// subscription) and the non-blocking SendToGroup. Per connection it keeps
// one goroutine blocked in Read, as coder/websocket requires. A SendToGroup
// is published to Redis from that goroutine, already framed as the record
// every member gets; one goroutine reads the subscription, builds the
// WebSocket frame once per message and writes the same bytes to each local
// member's socket itself (past coder/websocket, which only reads), one
// write system call per delivery. There are no actors,
// no ordering or failure guarantees beyond Redis', no keep-alive pings, no
// metrics and no limits: everything hubfabric adds costs on top of this.
// -pprof serves net/http/pprof, as cmd/node's flag of that name does.
//
// The benchmark builds ./cmd/node of a project directory; BENCHMARKS.md
// says how to point it at this command instead.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // on http.DefaultServeMux, served only with -pprof
	"os"
	"strings"
	"sync"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/hubfabric/hubfabric/scripts/floorhttp"
)

const rs = 0x1e // SignalR record separator

type member struct {
	ws  *websocket.Conn // reads only
	raw net.Conn        // written directly, whole frames
	mu  sync.Mutex      // one writer at a time
}

// hijackCapture hands coder/websocket the hijacked connection and keeps it,
// so frames can be written past coder/websocket's writer.
type hijackCapture struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := h.ResponseWriter.(http.Hijacker).Hijack()
	h.conn = c
	return c, brw, err
}

// textFrame is rec as one final, unmasked WebSocket text frame, as a
// server sends (the same header as transport's appendFrameHeader).
func textFrame(rec []byte) []byte {
	f := make([]byte, 0, 10+len(rec))
	switch n := len(rec); {
	case n <= 125:
		f = append(f, 0x81, byte(n))
	case n <= 0xffff:
		f = append(f, 0x81, 126, byte(n>>8), byte(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 0x81, 127), uint64(n))
	}
	return append(f, rec...)
}

type node struct {
	rdb *redis.Client
	sub *redis.PubSub

	mu     sync.Mutex
	groups map[string]map[*member]struct{}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	redisURL := flag.String("redis", "redis://127.0.0.1:6379", "Redis URL")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address (off when empty)")
	flag.Parse()
	if *pprofAddr != "" {
		go func() { slog.Error("pprof", "err", http.ListenAndServe(*pprofAddr, nil)) }()
	}
	opt, err := redis.ParseURL(*redisURL)
	if err != nil {
		slog.Error("redis URL", "err", err)
		os.Exit(2)
	}
	rdb := redis.NewClient(opt)
	n := &node{rdb: rdb, sub: rdb.Subscribe(context.Background()), groups: map[string]map[*member]struct{}{}}
	go n.fanOut()
	floorhttp.Serve(*addr, n.serve)
}

// record is what the load generator sends: an invocation.
type record struct {
	Type         int               `json:"type"`
	InvocationID string            `json:"invocationId"`
	Target       string            `json:"target"`
	Arguments    []json.RawMessage `json:"arguments"`
}

func (n *node) serve(w http.ResponseWriter, r *http.Request) {
	hc := &hijackCapture{ResponseWriter: w}
	ws, err := websocket.Accept(hc, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(1 << 16)
	m := &member{ws: ws, raw: hc.conn}
	ctx := context.Background()
	defer n.leaveAll(m)
	handshaken := false
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		for len(data) > 0 {
			i := bytes.IndexByte(data, rs)
			if i < 0 {
				break
			}
			rec := data[:i]
			data = data[i+1:]
			if !handshaken {
				handshaken = true
				if !m.write(textFrame([]byte("{}\x1e"))) {
					return
				}
				continue
			}
			if !n.handle(ctx, m, rec) {
				return
			}
		}
	}
}

// handle runs one record; false ends the connection.
func (n *node) handle(ctx context.Context, m *member, rec []byte) bool {
	if bytes.HasPrefix(rec, []byte(`{"type":6`)) { // ping
		return true
	}
	var in record
	if err := json.Unmarshal(rec, &in); err != nil {
		return false // not a record: the connection ends
	}
	if in.Type != 1 {
		return in.Type != 7 // a Close ends it; other messages are ignored
	}
	switch in.Target {
	case "JoinGroup":
		var g string
		if len(in.Arguments) != 1 || json.Unmarshal(in.Arguments[0], &g) != nil {
			return false
		}
		if err := n.join(ctx, m, g); err != nil {
			return m.write(textFrame([]byte(`{"type":3,"invocationId":"` + in.InvocationID + `","error":"join failed"}` + "\x1e")))
		}
		return m.write(textFrame([]byte(`{"type":3,"invocationId":"` + in.InvocationID + `"}` + "\x1e")))
	case "SendToGroup":
		var g string
		if len(in.Arguments) != 3 || json.Unmarshal(in.Arguments[0], &g) != nil {
			return false
		}
		frame := make([]byte, 0, 64+len(in.Arguments[1])+len(in.Arguments[2]))
		frame = append(frame, `{"type":1,"target":`...)
		frame = append(frame, in.Arguments[1]...)
		frame = append(frame, `,"arguments":[`...)
		frame = append(frame, in.Arguments[2]...)
		frame = append(frame, "]}\x1e"...)
		return n.rdb.Publish(ctx, "g:"+g, frame).Err() == nil
	}
	return true
}

func (n *node) join(ctx context.Context, m *member, g string) error {
	n.mu.Lock()
	set, ok := n.groups[g]
	if !ok {
		set = map[*member]struct{}{}
		n.groups[g] = set
	}
	set[m] = struct{}{}
	n.mu.Unlock()
	if ok {
		return nil
	}
	return n.sub.Subscribe(ctx, "g:"+g) // written before the completion; Redis orders it before later publishes
}

func (n *node) leaveAll(m *member) {
	n.mu.Lock()
	for _, set := range n.groups {
		delete(set, m)
	}
	n.mu.Unlock()
	_ = m.ws.CloseNow()
}

// write writes one whole frame to the member's socket.
func (m *member) write(frame []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err := m.raw.Write(frame)
	return err == nil
}

// fanOut reads the subscription and writes each record to each local member
// of its group, in turn, on this goroutine.
func (n *node) fanOut() {
	ctx := context.Background()
	var members []*member
	for {
		msg, err := n.sub.Receive(ctx)
		if err != nil {
			// A measuring stick fails loudly rather than retrying: a run
			// whose subscription broke measures nothing.
			slog.Error("subscription", "err", err)
			os.Exit(1)
		}
		pm, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		g := strings.TrimPrefix(pm.Channel, "g:")
		n.mu.Lock()
		members = members[:0]
		for m := range n.groups[g] {
			members = append(members, m)
		}
		n.mu.Unlock()
		frame := textFrame([]byte(pm.Payload))
		for _, m := range members {
			m.write(frame)
		}
	}
}
