package interop

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/internal/redistest"
)

const serviceKey = "interop-access-key-Hk2"

// TestInteropServiceMode starts two nodes in service mode on one redis-server, with an upstream
// that answers messages/echo with the invocation's first argument and messages/sendtoall with a
// 400, and runs interop/service.mjs (the official client, JSON and MessagePack, through /client/;
// the REST API as an app server).
func TestInteropServiceMode(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nodeJS := requireNodeJS(t, root)
	bin := buildNode(t, root)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if !strings.HasSuffix(r.URL.Path, "/messages/echo") {
			if strings.Contains(r.URL.Path, "/messages/") {
				http.Error(w, "no such method", http.StatusBadRequest)
			}
			return
		}
		if r.Header.Get("Content-Type") == "application/x-msgpack" {
			// [type, headers, invocationId, target, arguments, ...]: the first argument as it is.
			w.Write(firstMsgpackArg(t, b))
			return
		}
		var inv struct{ Arguments []json.RawMessage }
		if err := json.Unmarshal(b, &inv); err != nil || len(inv.Arguments) == 0 {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		w.Write(inv.Arguments[0])
	}))
	defer up.Close()
	redis := redistest.StartStandalone(t)
	addrs := []string{freeLoopbackAddr(t), freeLoopbackAddr(t)}
	for i, addr := range addrs {
		startNode(t, bin, addr, "node"+string(rune('1'+i)), []string{
			"--addr", addr, "--hub", hub1, "--node-id", "svc-" + string(rune('1'+i)),
			"--redis", redis.Addr, "--token-secret", tokenSecret,
			"--access-key", serviceKey, "--upstream", up.URL + "/{hub}/{category}/{event}",
		}, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), suiteLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeJS, filepath.Join("interop", "service.mjs"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "SVC_URL1=http://"+addrs[0], "SVC_URL2=http://"+addrs[1], "SVC_ACCESS_KEY="+serviceKey, "SVC_HUB="+hub1)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		t.Log("js: " + l)
	}
	if err != nil || !strings.Contains(string(out), " passed, 0 failed") || strings.Contains(string(out), "FAIL ") {
		t.Fatalf("service.mjs failed (exit: %v)", err)
	}
}

// firstMsgpackArg returns the encoding of the first argument of a MessagePack invocation.
func firstMsgpackArg(t *testing.T, b []byte) []byte {
	var inv []any
	if err := msgpackUnmarshal(b, &inv); err != nil || len(inv) < 5 {
		return nil
	}
	args, _ := inv[4].([]any)
	if len(args) == 0 {
		return nil
	}
	out, _ := msgpackMarshal(args[0])
	return out
}
