package service

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
	"github.com/hubfabric/hubfabric/client"
	"github.com/hubfabric/hubfabric/internal/redistest"
)

// BenchmarkRESTGroupSend measures POST /api/hubs/chat/groups/{group}/:send
// through one node (a) to 1,000 connections spread over two nodes on one
// redis-server (500 on each), with 1 and with 16 requests in flight. It
// reports requests per second (until the last 202) and the delivery latency
// of every copy (from just before its POST to the client's handler):
// median and p99. The clients (the repository's Go client) run in the same
// process as both nodes, on the same cores as redis-server. BENCH_CLIENTS
// replaces the 1,000. Run with
//
//	go test -run '^$' -bench RESTGroupSend -benchtime 2000x ./service
func BenchmarkRESTGroupSend(b *testing.B) {
	for _, posters := range []int{1, 16} {
		b.Run(fmt.Sprintf("posters=%d", posters), func(b *testing.B) { benchGroupSend(b, posters) })
	}
}

func benchGroupSend(b *testing.B, benchPosters int) {
	clients := 1000
	if v, err := strconv.Atoi(os.Getenv("BENCH_CLIENTS")); err == nil {
		clients = v
	}
	srv := redistest.StartStandalone(b)
	mk := func() *testNode {
		bp, err := redisbp.NewFromString(srv.Addr, func(o *redisbp.Options) { o.ChannelPrefix = "bench:" })
		if err != nil {
			b.Fatal(err)
		}
		return startNode(b, bp, redisbp.NewStore(bp), nil)
	}
	nodes := []*testNode{mk(), mk()}
	a := nodes[0]
	api := a.url + "/api/hubs/chat"
	// Every client's user is in the group before it connects: it joins on
	// connect (OnConnected).
	for i := range clients {
		u := api + fmt.Sprintf("/users/u%d/groups/room", i)
		if got, text := call(b, "PUT", u, ""); got != 200 {
			b.Fatalf("PUT %s: %d %s", u, got, text)
		}
	}
	var (
		delivered atomic.Int64
		want      atomic.Int64
		allIn     = make(chan struct{}, 1)
		latMu     sync.Mutex
		lat       []time.Duration
	)
	record := func(sent int64) {
		d := time.Since(time.Unix(0, sent))
		latMu.Lock()
		lat = append(lat, d)
		latMu.Unlock()
		if delivered.Add(1) == want.Load() {
			allIn <- struct{}{}
		}
	}
	var wg sync.WaitGroup
	conns := make([]*client.Conn, clients)
	errs := make(chan error, clients)
	sem := make(chan struct{}, 32)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n := nodes[i%2]
			url := n.url + "/client/?hub=chat"
			tok := mint(b, testKey, jwt.MapClaims{"aud": url, "exp": time.Now().Add(time.Hour).Unix(), "nameid": fmt.Sprintf("u%d", i)})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := client.Dial(ctx, url, &client.Options{
				AccessToken: func(context.Context) (string, error) { return tok, nil },
				Handlers:    map[string]any{"msg": record},
			})
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			select {
			case <-n.connectedCh(c.ConnectionID()):
			case <-ctx.Done():
				errs <- fmt.Errorf("client %d: OnConnected did not finish", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, c := range conns {
			_ = c.Close(ctx)
		}
	})
	want.Store(int64(b.N) * int64(clients))
	tok := "Bearer " + restToken(b, api+"/groups/room/:send")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchPosters}}
	defer hc.CloseIdleConnections()
	jobs := make(chan int)
	failed := make(chan error, benchPosters)
	b.ResetTimer()
	start := time.Now()
	var pw sync.WaitGroup
	for range benchPosters {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for range jobs {
				req, _ := http.NewRequest("POST", api+"/groups/room/:send?api-version=2022-06-01",
					strings.NewReader(fmt.Sprintf(`{"target":"msg","arguments":[%d]}`, time.Now().UnixNano())))
				req.Header.Set("Authorization", tok)
				resp, err := hc.Do(req)
				if err != nil {
					failed <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 202 {
					failed <- fmt.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		select {
		case jobs <- i:
		case err := <-failed:
			b.Fatal(err)
		}
	}
	close(jobs)
	pw.Wait()
	posted := time.Since(start)
	select {
	case err := <-failed:
		b.Fatal(err)
	default:
	}
	select {
	case <-allIn:
	case <-time.After(60 * time.Second):
		b.Fatalf("%d of %d deliveries after 60 s", delivered.Load(), want.Load())
	}
	b.StopTimer()
	latMu.Lock()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	latMu.Unlock()
	b.ReportMetric(float64(b.N)/posted.Seconds(), "req/s")
	b.ReportMetric(float64(b.N)*float64(clients)/time.Since(start).Seconds(), "deliveries/s")
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}
