package hub

import "errors"

// Attacher is implemented by hubs that need a step done for every new
// connection before its client hears the handshake answer (service mode
// records the connection in its cluster-wide registry there, so a REST
// call made as soon as the client is connected finds it). OnAttached runs
// once the connection is attached to its hub, so sends and group changes
// for it work, and before the answer is written; OnConnected runs
// meanwhile, concurrently, and the client's messages still wait for it.
//
// An error refuses the connection: the client gets the handshake error
// "Connection refused: <text>", and the connection ends as any other
// (OnDisconnected runs). A panic is such an error. c.Abort and
// c.CloseFunc must not be used in OnAttached (the connection's actor may
// not have started yet), and c.Items is nil (OnConnected owns them now);
// the hub's senders, Groups and c's other fields may be used.
type Attacher interface {
	OnAttached(c *Context) error
}

// attached runs the hub's OnAttached, if any, for c.
func (rt *hubRuntime) attached(c *Context) (err error) {
	h, ok := rt.impl.(Attacher)
	if !ok {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = rt.panicked(c.info, "OnAttached", r)
			return
		}
		if err != nil {
			err = errors.New(safeText(err))
		}
	}()
	return h.OnAttached(c)
}
