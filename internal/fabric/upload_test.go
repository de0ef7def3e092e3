package fabric

import (
	"testing"
	"testing/synctest"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hubfabric/hubfabric/protocol"
)

// TestUploadPushWaitsForRoomUntilTheConnectionCloses: an item pushed into
// a full upload stream waits (the reader is paused, back-pressure) until
// the stream's reader takes one, and a wait still going when the
// connection closes ends there: Closed finishes the stream, which wakes
// the push.
func TestUploadPushWaitsForRoomUntilTheConnectionCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		system := actor.NewActorSystem()
		pid := system.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
		defer system.Root.Stop(pid)
		uploads := NewUploads(1, 4)
		in := NewInbound(system.Root, pid, uploads, NewPending(8, 1<<20, nil), make(chan struct{}))
		ups, _, ok := uploads.create([]string{"s1"})
		if !ok {
			t.Fatal("the stream was not created")
		}
		item := func() *protocol.StreamItem {
			return &protocol.StreamItem{InvocationID: "s1", Item: protocol.RawValue(`1`)}
		}
		in.Receive(item()) // fills the buffer of 1
		pushed := make(chan struct{})
		go func() {
			in.Receive(item())
			close(pushed)
		}()
		synctest.Wait()
		select {
		case <-pushed:
			t.Fatal("a push into a full stream did not wait")
		default:
		}
		in.Closed(nil)
		<-pushed // a wait past Closed never ends: synctest reports the deadlock
		if _, ok := ups[0].Next(t.Context()); !ok {
			t.Fatal("the item taken before the close is gone")
		}
	})
}
