package actors

import (
	"fmt"
	"sync"
	"testing"

	"github.com/hubfabric/hubfabric/backplane"
	"github.com/hubfabric/hubfabric/internal/fabric"
	"github.com/hubfabric/hubfabric/protocol"
)

// batchingOutlet is a fakeOutlet that batches (fabric.Batcher) as
// *conn.Conn does: deferred records reach the fakeOutlet, in order, only
// on Flush.
type batchingOutlet struct {
	*fakeOutlet
	mu       sync.Mutex
	deferred [][]byte
	flushes  int
}

func (o *batchingOutlet) EnqueueDeferred(rec []byte) (bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deferred = append(o.deferred, rec)
	return len(o.deferred) == 1, nil
}

func (o *batchingOutlet) Flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushLocked()
}

// flushLocked passes the deferred records on; holding mu through it keeps
// them in order with a concurrent Flush or Enqueue, as *conn.Conn's one
// writer at a time does.
func (o *batchingOutlet) flushLocked() {
	o.flushes++
	for _, r := range o.deferred {
		_ = o.fakeOutlet.Enqueue(r)
	}
	o.deferred = nil
}

// Enqueue keeps the order with what waits for a Flush, as *conn.Conn's
// single queue does.
func (o *batchingOutlet) Enqueue(rec []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.deferred) > 0 {
		o.flushLocked()
	}
	return o.fakeOutlet.Enqueue(rec)
}

// TestBatchedFanOutDeliversEverythingInOrder: group, connection, user and
// all sends fanned out to batching outlets reach every member complete,
// once and in order, whether the actors write their batches themselves or
// a Flusher does, and a burst of sends costs fewer flushes than sends
// only when sends queued up (never more flushes than sends).
func TestBatchedFanOutDeliversEverythingInOrder(t *testing.T) {
	for _, withFlusher := range []bool{false, true} {
		t.Run(fmt.Sprintf("flusher=%v", withFlusher), func(t *testing.T) {
			var fl *fabric.Flusher
			t.Cleanup(func() { // registered first: runs after the node stopped
				if fl != nil {
					fl.Wait()
				}
			})
			sys := newTestSystem(t)
			n := startNode(t, sys, "n1", backplane.NewMemory(), func(c *fabric.NodeConfig) {
				if withFlusher {
					fl = fabric.NewFlusher(c.Seams.Runtime)
					c.Flusher = fl
				}
			})
			var outs []*batchingOutlet
			for i, p := range []protocol.HubProtocol{protocol.JSON, protocol.MessagePack, protocol.JSON} {
				id := fmt.Sprintf("c%d", i)
				out := &batchingOutlet{fakeOutlet: newOutlet(id, p)}
				resp, ok := n.request(n.hub, &fabric.ConnectRequest{
					Info:    &fabric.ConnectionInfo{ID: id, UserID: "u", Hub: "chat", Items: map[string]any{}, Outlet: out},
					Invoker: &fakeInvoker{},
				}).(*fabric.ConnectResponse)
				if !ok || resp.Err != nil {
					t.Fatalf("connect %s: %#v", id, resp)
				}
				n.conns = append(n.conns, &testConn{id: id, out: out.fakeOutlet, in: resp.Inbound})
				n.mustGroup(GroupAdd, id, "g")
				outs = append(outs, out)
			}
			// A burst: every request is sent before any answer is awaited,
			// so the hub and group mailboxes hold several sends at once.
			const sends = 200
			routes := []Route{{Kind: RouteGroup, Name: "g"}, {Kind: RouteAll}, {Kind: RouteUser, Name: "u"}}
			var futures []interface{ Result() (any, error) }
			var targets []string
			for i := 0; i < sends; i++ {
				target := fmt.Sprintf("m%d", i)
				req, err := NewSendRequest(routes[i%len(routes)], target)
				if err != nil {
					t.Fatal(err)
				}
				futures = append(futures, n.root.RequestFuture(n.hub, req, waitTimeout))
				targets = append(targets, target)
			}
			for i, f := range futures {
				res, err := f.Result()
				if r, ok := res.(*SendResponse); err != nil || !ok || r.Err != nil {
					t.Fatalf("send %d: %v %#v", i, err, res)
				}
			}
			for _, out := range outs {
				out.waitRecords(t, sends)
			}
			for _, out := range outs {
				// Order holds per route (group, all, user); one route's
				// sends are every third, so the whole sequence is checked
				// route by route.
				got := out.recordsNow()
				if len(got) != sends {
					t.Fatalf("%s got %d records, want %d", out.id, len(got), sends)
				}
				for r := range routes {
					var want, have []string
					for i := r; i < sends; i += len(routes) {
						want = append(want, targets[i])
					}
					for _, rec := range got {
						msgs, _, err := out.protocol.ParseMessages(rec, 1<<20)
						if err != nil || len(msgs) != 1 {
							t.Fatalf("%s: record %q: %v", out.id, rec, err)
						}
						m := msgs[0].(*protocol.Invocation)
						var k int
						fmt.Sscanf(m.Target, "m%d", &k)
						if k%len(routes) == r {
							have = append(have, m.Target)
						}
					}
					if fmt.Sprint(have) != fmt.Sprint(want) {
						t.Fatalf("%s: route %v delivered %v, want %v", out.id, routes[r], have, want)
					}
				}
				out.mu.Lock()
				flushes := out.flushes
				out.mu.Unlock()
				if flushes > sends {
					t.Fatalf("%s: %d flushes for %d sends", out.id, flushes, sends)
				}
				t.Logf("%s: %d sends in %d flushes", out.id, sends, flushes)
			}
		})
	}
}
