// Command idlefloor is a measuring stick, not a server to run: the least
// memory an idle SignalR connection can cost a node built on the
// project's own dependencies, for a run of the benchmark's idle phase
// beside hubfabric and Centrifugo (BENCHMARKS.md says how).
//
// Per connection it keeps only what the design requires of any node: the
// coder/websocket connection (over bufio's least read and write buffers,
// as hubfabric's transport sets them up), one protoactor actor (the
// connection's, idle), and the connection's own channel subscribed on
// Redis (one go-redis PubSub for the node). It reads the JSON handshake
// on the HTTP handler's goroutine, answers it, and then holds the
// connection with no goroutine at all and never reads it again: a lower
// bound for hubfabric's parked connections, which are read again when the
// client speaks. No keep-alive, no timeouts, no hub, no metrics.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/hubfabric/hubfabric/internal/actorreg"
	"github.com/hubfabric/hubfabric/scripts/floorhttp"
)

// smallBuffers hands coder/websocket the hijacked connection with bufio's
// least buffers, as hubfabric's transport does for a parked connection.
type smallBuffers struct{ http.ResponseWriter }

func (w smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	bw := bufio.NewWriterSize(c, 16)
	n := brw.Reader.Buffered()
	if n == 0 {
		return c, bufio.NewReadWriter(bufio.NewReaderSize(c, 16), bw), nil
	}
	// Bytes the client sent right after the 101 (its handshake) must sit
	// in the new reader's buffer, as hubfabric's transport carries them.
	early, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), c), max(n, 16))
	if _, err := br.Peek(n); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, bufio.NewReadWriter(br, bw), nil
}

// idleActor is a connection's actor: it only ever gets Started.
type idleActor struct{ id string }

func (a *idleActor) Receive(actor.Context) {}

type node struct {
	system *actor.ActorSystem
	sub    *redis.PubSub

	mu    sync.Mutex
	conns map[string]held
}

// held is what the node keeps of an open connection.
type held struct {
	ws  *websocket.Conn
	pid *actor.PID
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	redisURL := flag.String("redis", "redis://127.0.0.1:6379", "Redis URL")
	flag.Parse()
	opt, err := redis.ParseURL(*redisURL)
	if err != nil {
		slog.Error("redis URL", "err", err)
		os.Exit(2)
	}
	rdb := redis.NewClient(opt)
	sys := actor.NewActorSystem()
	actorreg.Compact(sys) // as hub.New does for the system it makes
	n := &node{system: sys, sub: rdb.Subscribe(context.Background()), conns: map[string]held{}}
	floorhttp.Serve(*addr, n.serve)
}

func (n *node) serve(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	ws, err := websocket.Accept(smallBuffers{w}, r, nil)
	if err != nil {
		return
	}
	ctx := context.Background()
	if _, _, err := ws.Read(ctx); err != nil { // the handshake request
		ws.CloseNow()
		return
	}
	if err := n.sub.Subscribe(ctx, "c:"+id); err != nil {
		ws.CloseNow()
		return
	}
	pid := n.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &idleActor{id: id} }))
	if err := ws.Write(ctx, websocket.MessageText, []byte("{}\x1e")); err != nil {
		ws.CloseNow()
		return
	}
	n.mu.Lock()
	n.conns[id] = held{ws: ws, pid: pid}
	n.mu.Unlock()
}
