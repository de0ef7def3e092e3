// Package interop holds the suite that drives the official SignalR JavaScript client
// (@microsoft/signalr and @microsoft/signalr-protocol-msgpack, pinned in the repository's
// package.json) against real hubfabric nodes built from ./cmd/node. The scenarios live in
// scenarios.mjs; interop_test.go builds and starts one node and runs them with node.
// multinode_test.go runs them across several nodes sharing one real redis-server (standalone, and
// a 3-master Redis Cluster, started by internal/redistest), and checks that a node survives a
// Redis outage (with the Go client of package client).
package interop
