package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubfabric/hubfabric/client"
)

func TestServiceFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"empty access key", []string{"--access-key", ""}, nil, "--access-key is empty"},
		{"empty access key in env", nil, map[string]string{"HUBFABRIC_ACCESS_KEY": ""}, "HUBFABRIC_ACCESS_KEY is set but empty"},
		{"empty connection string", []string{"--connection-string="}, nil, "--connection-string is empty"},
		{"bad connection string", []string{"--connection-string", "Endpoint=http://h:1;AccessKey=k;Color=red"}, nil, `--connection-string: service: connection string: unknown key "Color"`},
		{"connection string without key", []string{"--connection-string", "Endpoint=http://h:1;Version=1.0"}, nil, "AccessKey is missing"},
		{"upstream without service mode", []string{"--upstream", "http://b/{hub}/{category}/{event}"}, nil, "--upstream needs service mode"},
		{"bad upstream", []string{"--access-key", "k", "--upstream", "backend/{hub}"}, nil, "want an http(s) URL template"},
		{"unknown placeholder", []string{"--access-key", "k", "--upstream", "http://b/{hub}/{method}"}, nil, "unknown placeholder"},
		{"jwt secret with service mode", []string{"--access-key", "k", "--jwt-secret", "s"}, nil, "exclude each other"},
		{"zero upstream timeout", []string{"--access-key", "k", "--upstream-timeout", "0s"}, nil, "--upstream-timeout must be positive"},
		{"zero upstream concurrency", []string{"--access-key", "k", "--upstream-concurrency", "0"}, nil, "--upstream-concurrency must be positive"},
		{"zero body bytes", []string{"--access-key", "k", "--max-rest-body-bytes", "0"}, nil, "--max-rest-body-bytes must be positive"},
		{"zero heartbeat interval", []string{"--access-key", "k", "--store-heartbeat-interval", "0s"}, nil, "--store-heartbeat-interval must be positive"},
		{"heartbeat ttl too short", []string{"--access-key", "k", "--store-heartbeat-interval", "2s", "--store-heartbeat-ttl", "3s"}, nil, "--store-heartbeat-ttl (3s) must be at least twice --store-heartbeat-interval (2s)"},
		{"heartbeat ttl too short in env", []string{"--access-key", "k"}, map[string]string{"HUBFABRIC_STORE_HEARTBEAT_TTL": "1s"}, "--store-heartbeat-ttl (1s) must be at least twice"},
		{"zero sweep batch", []string{"--access-key", "k", "--store-sweep-batch", "0"}, nil, "--store-sweep-batch must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			err := run(context.Background(), tc.args, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }, &stderr)
			var u usageError
			if !errors.As(err, &u) || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("run = %v, stderr %q; want a usage error saying %q", err, stderr.String(), tc.want)
			}
		})
	}
	env := map[string]string{"HUBFABRIC_ACCESS_KEY": "k1,k2", "HUBFABRIC_UPSTREAM": "http://b/{hub}/{category}/{event}", "HUBFABRIC_STORE_HEARTBEAT_INTERVAL": "1s", "HUBFABRIC_STORE_HEARTBEAT_TTL": "4s", "HUBFABRIC_STORE_SWEEP_BATCH": "50"}
	o, err := parseOptions(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil || len(o.svc.accessKeys) != 2 || o.svc.upstream == "" || !o.svc.enabled() || o.svc.heartbeatInterval != time.Second || o.svc.heartbeatTTL != 4*time.Second || o.svc.sweepBatch != 50 {
		t.Fatalf("from the environment: %+v, %v", o.svc, err)
	}
	o, err = parseOptions([]string{"--connection-string", "Endpoint=http://svc.example:8080;AccessKey=abc;Version=1.0;", "--access-key", "old"}, noEnv, io.Discard)
	if err != nil || o.svc.endpoint != "http://svc.example:8080" || strings.Join(o.svc.accessKeys, ",") != "abc,old" {
		t.Fatalf("connection string: %+v, %v", o.svc, err)
	}
}

// TestServiceModeNode runs the node binary's run with --access-key: the
// REST API answers with a token and refuses without one, a client connects
// through /client/ with an access token, and the relay hub's methods are
// gone (no upstream: an invocation fails saying so).
func TestServiceModeNode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logs := &syncBuffer{want: "msg=started", seen: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--addr", addr, "--access-key", "the-key"}, noEnv, logs) }()
	select {
	case <-logs.seen:
	case err := <-done:
		t.Fatalf("run ended early: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("no started line:\n%s", logs)
	}
	base := "http://" + addr
	sign := func(claims jwt.MapClaims) string {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("the-key"))
		return s
	}
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(cctx, base+"/client/?hub=chat", &client.Options{
		AccessToken: func(context.Context) (string, error) {
			return sign(jwt.MapClaims{"aud": base + "/client/?hub=chat", "nameid": "u1"}), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(cctx)
	if _, err := c.Invoke(cctx, "SendToAll", "m", "x"); err == nil || !strings.Contains(err.Error(), "no upstream configured") {
		t.Fatalf("relay method in service mode: %v", err)
	}
	if _, err := client.Dial(cctx, base+"/hubs/chat", nil); err == nil {
		t.Fatal("a client without an access token connected")
	}
	u := base + "/api/hubs/chat/users/u1"
	for _, tc := range []struct {
		authz string
		want  int
	}{{"", 401}, {"Bearer " + sign(jwt.MapClaims{"aud": u}), 200}} {
		req, _ := http.NewRequest("HEAD", u+"?api-version=2022-06-01", nil)
		if tc.authz != "" {
			req.Header.Set("Authorization", tc.authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("HEAD user with %q: %d, want %d", tc.authz, resp.StatusCode, tc.want)
		}
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after shutdown")
	}
}
