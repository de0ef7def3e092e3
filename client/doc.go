// Package client is a Go SignalR client for ASP.NET Core-compatible SignalR
// servers (hubfabric nodes included), for Go services, tests and load
// generators.
//
// Dial negotiates, opens a WebSocket (the only transport implemented), performs
// the handshake and returns a connected *Conn. With a Conn you can
//
//   - register client methods the server calls ([Conn.On]), including
//     client results (a handler returning a value answers the server);
//   - call hub methods and wait for their result ([Conn.Invoke], [InvokeAs]),
//     or fire and forget ([Conn.Send]);
//   - consume server-to-client streams ([Conn.Stream]) and upload
//     client-to-server streams by passing a receive channel as an argument;
//   - reconnect automatically ([Options.Reconnect]).
//
// Both hub protocols are supported: "json" (text frames) and "messagepack"
// (binary frames). Arguments are encoded and results decoded by the
// [protocol] package.
//
// # Concurrency
//
// All methods of Conn and Stream are safe for concurrent use. Handlers and
// the OnReconnecting/OnReconnected hooks of one Conn run one at a time, in
// the order their messages arrived, on a goroutine owned by the Conn, never
// on the goroutine reading the socket: a slow handler delays other handlers
// but not Pings, Completions or stream items. A Conn owns every goroutine it
// starts and Close waits for all of them.
package client
