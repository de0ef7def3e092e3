package conn

import (
	"context"
	"errors"
	"testing"

	"github.com/hubfabric/hubfabric/protocol"
)

// TestRefusedAfterCloseDuringConnect: a connection closed while connect
// runs (Close, or an overflow of what the hub already queued) and then
// refused still starts its output with a handshake response, and with
// "Connection refused: <err>", as Open documents, when the writer the Close
// started had not run before connect returned. (refuse used to clear the
// greeting without sending its refusal: the client got a bare Close hub
// message where the handshake answer should be.)
func TestRefusedAfterCloseDuringConnect(t *testing.T) {
	t.Parallel()
	for _, writerFirst := range []bool{false, true} {
		name := "writer runs after connect returned"
		if writerFirst {
			name = "writer runs before connect returned"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rt := newFakeRuntime(t)
			rt.setHold(true)
			sock := newFakeSocket()
			boom := errors.New("no answer from the node's actors")
			c, err := Open(context.Background(), sock, testOptions(protocol.JSON, rt), func(_ context.Context, c *Conn) (Session, error) {
				c.Close("Server is shutting down.", true)
				if writerFirst {
					rt.runHeld()
				}
				return nil, boom
			})
			if !errors.Is(err, boom) || c == nil {
				t.Fatalf("Open = %v, %v", c, err)
			}
			rt.setHold(false)
			waitReturns(t, "Wait", c.Wait)
			st := sock.snapshot()
			resp, _, perr := protocol.ParseHandshakeResponse(st.stream())
			if perr != nil {
				t.Fatalf("client got %q, which does not start with a handshake response: %v", st.stream(), perr)
			}
			// Once the writer ran during connect the greeting is out and
			// nothing can take it back; otherwise the refusal is due.
			if want := "Connection refused: " + boom.Error(); !writerFirst && resp.Error != want {
				t.Fatalf("client got %q: handshake response %+v; want the error %q", st.stream(), resp, want)
			}
		})
	}
}
