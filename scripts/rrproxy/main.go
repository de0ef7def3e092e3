// Command rrproxy is a tiny round-robin HTTP proxy: each request (WebSocket
// upgrades included) goes to the next backend in turn, so a SignalR
// client's negotiate, event stream, polls and sends spread over every
// node, without sticky sessions. For trying the HTTP transports across
// nodes by hand and for interop/latency.mjs:
//
//	go run ./scripts/rrproxy -addr 127.0.0.1:8090 127.0.0.1:8081 127.0.0.1:8082
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync/atomic"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: rrproxy [-addr host:port] backend-host:port...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	var backends []*httputil.ReverseProxy
	for _, a := range flag.Args() {
		u, err := url.Parse("http://" + a)
		if err != nil || u.Host == "" {
			log.Fatalf("rrproxy: bad backend %q", a)
		}
		p := httputil.NewSingleHostReverseProxy(u)
		p.FlushInterval = -1 // event streams and poll answers go through at once
		backends = append(backends, p)
	}
	var next atomic.Uint64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backends[(next.Add(1)-1)%uint64(len(backends))].ServeHTTP(w, r)
	})
	log.Printf("rrproxy: %s -> %v", *addr, flag.Args())
	log.Fatal(http.ListenAndServe(*addr, h))
}
