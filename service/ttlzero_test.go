package service

import (
	"testing"

	"github.com/hubfabric/hubfabric/backplane"
)

// TestUserGroupTTLZeroKeepsCurrentConnections: PUT .../users/{user}/groups/{group}?ttl=0
// adds the user's current connections to the group (Azure SignalR Service
// 2022-06-01: "If ttl = 0, only the current connected connections of the
// target user will be added to the target group"); they stay members,
// and no expiry takes them out again.
func TestUserGroupTTLZeroKeepsCurrentConnections(t *testing.T) {
	bus := backplane.NewMemoryBus()
	store := NewMemoryStore()
	a := startNode(t, bus.NewBackplane(), store, nil)
	alice := connect(t, a, "alice", "json")
	api := a.url + "/api/hubs/chat"
	expect(t, "PUT", api+"/users/alice/groups/now"+v+"&ttl=0", "", 200)
	a.svc.mu.Lock()
	pending := len(a.svc.timers)
	a.svc.mu.Unlock()
	a.svc.expiring.Wait() // an expiry that fired has done its work
	if pending > 0 {
		t.Fatalf("ttl=0 scheduled %d expiry timer(s): the current connections would leave the group", pending)
	}
	expect(t, "POST", api+"/groups/now/:send"+v, body("msg", "still-in"), 202)
	alice.want(t, "still-in")
}
