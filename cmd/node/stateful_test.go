package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hubfabric/hubfabric/hub"
)

// TestStatefulReconnectFlags: --stateful-reconnect and its buffer and window come from flags
// and the environment, default to the hub's, and must be positive.
func TestStatefulReconnectFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HUBFABRIC_STATEFUL_RECONNECT_WINDOW": "3s"}
	o, err := parseOptions([]string{"--stateful-reconnect", "--stateful-reconnect-buffer-size", "5000"},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := o.hubConfig(nil); !cfg.StatefulReconnect || cfg.StatefulReconnectBufferSize != 5000 || cfg.StatefulReconnectWindow != 3*time.Second {
		t.Fatalf("hub.Config = %+v", cfg)
	}
	o, err = parseOptions(nil, func(k string) (string, bool) {
		return map[string]string{"HUBFABRIC_STATEFUL_RECONNECT": "true"}[k], k == "HUBFABRIC_STATEFUL_RECONNECT"
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := o.hubConfig(nil); !cfg.StatefulReconnect || cfg.StatefulReconnectBufferSize != hub.DefaultStatefulReconnectBufferSize || cfg.StatefulReconnectWindow != hub.DefaultStatefulReconnectWindow {
		t.Fatalf("defaults: %+v", cfg)
	}
	if cfg := mustParse(t).hubConfig(nil); cfg.StatefulReconnect {
		t.Fatal("stateful reconnect is on without the flag")
	}
	for _, f := range []string{"stateful-reconnect-buffer-size", "stateful-reconnect-window"} {
		if _, err := parseOptions([]string{"--" + f, "0"}, noEnv, io.Discard); err == nil || !strings.Contains(err.Error(), "--"+f+" must be positive") {
			t.Errorf("--%s 0: %v", f, err)
		}
	}
}

func mustParse(t *testing.T) *options {
	t.Helper()
	o, err := parseOptions(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return &o
}
