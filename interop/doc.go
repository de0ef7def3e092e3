// Package interop holds the suite that drives the official SignalR JavaScript client
// (@microsoft/signalr and @microsoft/signalr-protocol-msgpack, pinned in the repository's
// package.json) against a real hubfabric node built from ./cmd/node. The scenarios live in
// scenarios.mjs; interop_test.go builds and starts the node and runs them with node.
package interop
