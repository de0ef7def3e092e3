package hub_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/hub"
)

// slowResult is a result whose encoding reports whether the client's next
// call started before it: it waits a little for that to happen.
type slowResult struct{ next <-chan struct{} }

func (r slowResult) MarshalJSON() ([]byte, error) {
	select {
	case <-r.next:
		return []byte(`"next call ran before my Completion was sent"`), nil
	case <-time.After(300 * time.Millisecond): // a bound on a negative check
		return []byte(`"in order"`), nil
	}
}

type orderHub struct {
	firstRunning chan struct{}
	nextRan      chan struct{}
}

func (h *orderHub) First(_ *hub.Context) (slowResult, error) {
	close(h.firstRunning)
	return slowResult{next: h.nextRan}, nil
}

func (h *orderHub) Next(_ *hub.Context) error { close(h.nextRan); return nil }

// TestCompletionBeforeNextCall: with one invocation at a time per client
// (the default, as ASP.NET's MaximumParallelInvocationsPerClient), a
// client's next call starts only once the previous call's Completion is
// sent, so completions (and what the next call sends) keep the client's
// order.
func TestCompletionBeforeNextCall(t *testing.T) {
	h := &orderHub{firstRunning: make(chan struct{}), nextRan: make(chan struct{})}
	n := startNode(t, hub.Config{}, map[string]any{"order": h})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, n.url+"order", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	first := make(chan string, 1)
	go func() {
		res, err := c.Invoke(ctx, "First")
		var s string
		if err == nil {
			err = res.Bind(&s)
		}
		if err != nil {
			s = err.Error()
		}
		first <- s
	}()
	<-h.firstRunning
	if _, err := c.Invoke(ctx, "Next"); err != nil {
		t.Fatal(err)
	}
	if got := <-first; got != "in order" {
		t.Fatalf("First's result: %q", got)
	}
	var _ json.Marshaler = slowResult{}
}
