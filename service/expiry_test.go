package service

import (
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/backplane"
)

// TestUserGroupTTLExpires: a user added to a group with a ttl leaves it when
// the ttl ends: her connection on the other node stops getting the group's
// messages, and the membership check answers 404.
func TestUserGroupTTLExpires(t *testing.T) {
	bus := backplane.NewMemoryBus()
	store := NewMemoryStore()
	a := startNode(t, bus.NewBackplane(), store, nil)
	expired := make(chan string, 4)
	a.svc.expiredHook = func(_, user, group string) { expired <- user + "/" + group }
	b := startNode(t, bus.NewBackplane(), store, nil)
	alice := connect(t, b, "alice", "json")
	api := a.url + "/api/hubs/chat"
	start := time.Now()
	expect(t, "PUT", api+"/users/alice/groups/short"+v+"&ttl=1", "", 200)
	expect(t, "PUT", api+"/users/alice/groups/long"+v+"&ttl=3600", "", 200)
	expect(t, "POST", api+"/groups/short/:send"+v, body("msg", "in-time"), 202)
	alice.want(t, "in-time")
	select {
	case got := <-expired:
		if got != "alice/short" {
			t.Fatalf("expired %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the 1 s ttl did not expire within 10 s")
	}
	if time.Since(start) < time.Second {
		t.Fatalf("expired after %v, before the ttl", time.Since(start))
	}
	expect(t, "HEAD", api+"/users/alice/groups/short"+v, "", 404)
	expect(t, "HEAD", api+"/users/alice/groups/long"+v, "", 200)
	expect(t, "POST", api+"/groups/short/:send"+v, body("msg", "too-late"), 202)
	expect(t, "POST", api+"/groups/long/:send"+v, body("msg", "long"), 202)
	alice.want(t, "long") // not too-late
}
