// Package floorhttp is the HTTP front the floor scripts (floornode,
// idlefloor) share: just enough of SignalR's negotiate for the benchmark's
// load generator, and the routes that go with it.
package floorhttp

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"os"
)

// Serve serves addr until it fails, then logs why and exits 1: /healthz,
// POST /hubs/{hub}/negotiate (negotiate) and GET /hubs/{hub}, the
// WebSocket connection, with connect.
func Serve(addr string, connect http.HandlerFunc) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("POST /hubs/{hub}/negotiate", negotiate)
	mux.HandleFunc("GET /hubs/{hub}", connect)
	slog.Error("serve", "err", http.ListenAndServe(addr, mux))
	os.Exit(1)
}

// negotiate answers a negotiate with a random connection id, used as its
// token too, and WebSockets as the only transport.
func negotiate(w http.ResponseWriter, _ *http.Request) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"negotiateVersion":1,"connectionId":"` + id + `","connectionToken":"` + id +
		`","availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}`))
}
