package redisbp_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
)

func TestParseConnectionString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want redisbp.Options
	}{
		{"host:port", "redis.example:7000", redisbp.Options{Addrs: []string{"redis.example:7000"}}},
		{"ipv4", "10.0.0.5:6379,abortConnect=false", redisbp.Options{Addrs: []string{"10.0.0.5:6379"}}},
		{"ipv6 with port", "[::1]:7000", redisbp.Options{Addrs: []string{"[::1]:7000"}}},
		{"several endpoints mean cluster", "a:1,b:2,c:65535", redisbp.Options{Addrs: []string{"a:1", "b:2", "c:65535"}}},
		{"channelPrefix with every allowed character", "h:1,channelPrefix=A-z_0.9:", redisbp.Options{Addrs: []string{"h:1"}, ChannelPrefix: "A-z_0.9:"}},
		{"password", "h:6379,password=s3cr=t", redisbp.Options{Addrs: []string{"h:6379"}, Password: "s3cr=t"}},
		{"user", "h:6379,user=alice", redisbp.Options{Addrs: []string{"h:6379"}, Username: "alice"}},
		{"ssl true", "h:6379,ssl=true", redisbp.Options{Addrs: []string{"h:6379"}, TLS: true}},
		{"ssl False", "h:6379,ssl=False", redisbp.Options{Addrs: []string{"h:6379"}}},
		{"channelPrefix", "h:6379,channelPrefix=app1:", redisbp.Options{Addrs: []string{"h:6379"}, ChannelPrefix: "app1:"}},
		{"abortConnect", "h:6379,abortConnect=true", redisbp.Options{Addrs: []string{"h:6379"}, AbortConnect: true}},
		{"serviceName means sentinel", "s1:26379,s2:26379,serviceName=mymaster",
			redisbp.Options{Addrs: []string{"s1:26379", "s2:26379"}, SentinelMaster: "mymaster"}},
		{"connectTimeout", "h:6379,connectTimeout=250", redisbp.Options{Addrs: []string{"h:6379"}, ConnectTimeout: 250 * time.Millisecond}},
		{"defaultDatabase", "h:6379,defaultDatabase=3", redisbp.Options{Addrs: []string{"h:6379"}, DB: 3}},
		{"keys are case-insensitive", "h:6379,PASSWORD=p,AbortConnect=TRUE,CHANNELPREFIX=x:,ConnectTimeout=10,DEFAULTDATABASE=1,User=u,SSL=true,servicename=m",
			redisbp.Options{Addrs: []string{"h:6379"}, Password: "p", AbortConnect: true, ChannelPrefix: "x:",
				ConnectTimeout: 10 * time.Millisecond, DB: 1, Username: "u", TLS: true, SentinelMaster: "m"}},
		{"spaces and empty segments ignored", " h:1 , , password = p ", redisbp.Options{Addrs: []string{"h:1"}, Password: "p"}},
		{"last value wins", "h:6379,user=a,user=b", redisbp.Options{Addrs: []string{"h:6379"}, Username: "b"}},
		{"redis URL", "redis://u:p@h:7000/2", redisbp.Options{Addrs: []string{"h:7000"}, Username: "u", Password: "p", DB: 2}},
		{"redis URL defaults", "redis://h", redisbp.Options{Addrs: []string{"h:6379"}}},
		{"rediss URL", "rediss://:p@h", redisbp.Options{Addrs: []string{"h:6379"}, Password: "p", TLS: true}},
		{"URL dial_timeout", "redis://h?dial_timeout=3", redisbp.Options{Addrs: []string{"h:6379"}, ConnectTimeout: 3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := redisbp.ParseConnectionString(tt.in)
			if err != nil {
				t.Fatalf("ParseConnectionString(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseConnectionString(%q) =\n%+v, want\n%+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseConnectionStringErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		wantErr string // a substring
	}{
		{"", "empty"},
		{"   ", "empty"},
		{"h:6379,foo=bar", `unknown option "foo"`},
		{"h:6379,connectTimeout=abc", `connectTimeout "abc" is not a number of milliseconds`},
		{"h:6379,connectTimeout=-5", `connectTimeout "-5" is not a number of milliseconds`},
		{"h:6379,connectTimeout=10000000000000", `connectTimeout 10000000000000 is over the limit of 3600000 ms`},
		{"h:6379,defaultDatabase=x", `defaultDatabase "x" is not a database number`},
		{"h:6379,defaultDatabase=-1", `defaultDatabase "-1" is not a database number`},
		{"h:6379,ssl=yes", `ssl "yes" is not true or false`},
		{"h:6379,abortConnect=1", `abortConnect "1" is not true or false`},
		{"h:6379,serviceName=", "serviceName is empty"},
		{"h:6379,=v", "has no key"},
		{"password=p", "no host:port endpoint"},
		{"h:notaport", `port "notaport" is not a number`},
		{"h:0", `port "0" is not a number from 1 to 65535`},
		{"h:70000", `port "70000"`},
		{":6379", "has no host"},
		{"::1", `"::1": not host:port or key=value`},
		{"localhost", `"localhost": not host:port or key=value`},
		{"[::1]", `"[::1]": not host:port or key=value`},
		{"a,password", `"a": not host:port or key=value`},
		{"h:1,password", `"password": not host:port or key=value`},
		{"h:1,hunter 2", `not host:port or key=value`},
		{"h:1,b", `"b": not host:port or key=value`},
		{"h:+1", `port "+1" is not a number`},
		{"h:06379", `port "06379" is not a number`},
		{"[h]]:1", `not host:port`},
		{"h :1", `host "h " is not a host name or address`},
		{"h:1,channelPrefix=", `channelPrefix: channel prefix "": use letters, digits, '.', '_', '-' and end it with one ':' (like "app:")`},
		{"h:1,channelPrefix=app", `channel prefix "app": use letters`},
		{"h:1,channelPrefix=x:y", `channel prefix "x:y": use letters`},
		{"h:1,channelPrefix=hubfabric:h:chat:g:x", `channel prefix "hubfabric:h:chat:g:x"`},
		{"h:1,channelPrefix=hubfabric:h:chat:g:x:", `channel prefix "hubfabric:h:chat:g:x:"`},
		{"h:1,channelPrefix=app::", `channel prefix "app::"`},
		{"h:1,channelPrefix={p1}app:", `channel prefix "{p1}app:"`},
		{"h:1,channelPrefix=app/1:", `channel prefix "app/1:"`},
		{"h:1,channelPrefix=:", `channel prefix ":"`},
		{"redis://h?bogus=1", "URL"},
		{"redis://h/notadb", "URL"},
		{"redis://h:0", `URL: address "h:0": port "0"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			_, err := redisbp.ParseConnectionString(tt.in)
			if err == nil {
				t.Fatalf("ParseConnectionString(%q) succeeded, want an error containing %q", tt.in, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "redisbp: connection string") {
				t.Errorf("ParseConnectionString(%q) error %q, want it to start with %q and contain %q",
					tt.in, err, "redisbp: connection string", tt.wantErr)
			}
		})
	}
}

func TestErrorDoesNotLeakPassword(t *testing.T) {
	t.Parallel()
	_, err := redisbp.ParseConnectionString("password=hunter2")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v shows the password", err)
	}
}

func TestNewClientKinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want any
	}{
		{"h:1", &redis.Client{}},
		{"a:1,b:2", &redis.ClusterClient{}},
		{"s:26379,serviceName=m", &redis.Client{}}, // a FailoverClient is a *redis.Client
	}
	for _, tt := range tests {
		o, err := redisbp.ParseConnectionString(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		c := o.NewClient()
		if reflect.TypeOf(c) != reflect.TypeOf(tt.want) {
			t.Errorf("%q: NewClient() is %T, want %T", tt.in, c, tt.want)
		}
		c.Close()
	}
	uo := redisbp.Options{Addrs: []string{"s:26379"}, SentinelMaster: "m"}.UniversalOptions()
	if uo.MasterName != "m" {
		t.Errorf("MasterName = %q, want m", uo.MasterName)
	}
	uo = redisbp.Options{Addrs: []string{"h:1"}, TLS: true}.UniversalOptions()
	if uo.TLSConfig == nil || uo.TLSConfig.ServerName != "h" {
		t.Errorf("TLSConfig = %+v, want ServerName h", uo.TLSConfig)
	}
	if uo := (redisbp.Options{}).UniversalOptions(); uo.DialTimeout != redisbp.DefaultConnectTimeout || uo.MaxRetries != 1 {
		t.Errorf("defaults: DialTimeout %v MaxRetries %d", uo.DialTimeout, uo.MaxRetries)
	}
}

func TestNewFromStringErrors(t *testing.T) {
	t.Parallel()
	if _, err := redisbp.NewFromString("h:6379,foo=1"); err == nil || !strings.Contains(err.Error(), `unknown option "foo"`) {
		t.Errorf("NewFromString with an unknown option: %v", err)
	}
	if _, err := redisbp.NewFromString("h:1", func(o *redisbp.Options) { o.Sharded = 9 }); err == nil {
		t.Errorf("NewFromString with a bad override succeeded")
	}
	if _, err := redisbp.New(nil, redisbp.Options{}); err == nil {
		t.Errorf("New(nil) succeeded")
	}
}

// TestValidateRefusesBadPrefixesAndAddresses: Options built in code get the
// same checks as a connection string.
func TestValidateRefusesBadPrefixesAndAddresses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		opts    redisbp.Options
		wantErr string // "" for valid
	}{
		{redisbp.Options{}, ""},
		{redisbp.Options{ChannelPrefix: "app:"}, ""},
		{redisbp.Options{Addrs: []string{"[::1]:6379", "h:1"}}, ""},
		{redisbp.Options{ChannelPrefix: "app"}, `redisbp: channel prefix "app": use letters, digits, '.', '_', '-' and end it with one ':' (like "app:")`},
		{redisbp.Options{ChannelPrefix: "hubfabric:h:chat:g:x:"}, `channel prefix "hubfabric:h:chat:g:x:"`},
		{redisbp.Options{ChannelPrefix: "a{b}:"}, `channel prefix "a{b}:"`},
		{redisbp.Options{Addrs: []string{"localhost"}}, `address "localhost": not host:port`},
		{redisbp.Options{Addrs: []string{"h:0"}}, `address "h:0": port "0" is not a number from 1 to 65535`},
	}
	for _, tt := range tests {
		err := tt.opts.Validate()
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("Validate(%+v) = %v, want nil", tt.opts, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Validate(%+v) = %v, want an error containing %q", tt.opts, err, tt.wantErr)
		}
	}
	if _, err := redisbp.NewFromString("h:1", func(o *redisbp.Options) { o.ChannelPrefix = "x:y" }); err == nil {
		t.Error("NewFromString with a bad ChannelPrefix override succeeded")
	}
}

// FuzzParseConnectionString: the parser of a string from outside never
// panics; what it accepts is usable (every endpoint host:port, Validate
// passes, the prefix empty or valid) and parses again to the same
// endpoints; what it refuses is an error that says it is about the
// connection string.
func FuzzParseConnectionString(f *testing.F) {
	for _, s := range []string{
		"10.0.0.5:6379,abortConnect=false", "a:1,b:2,c:3,serviceName=m", "[::1]:7000,password=p=q",
		"h:1,channelPrefix=app:", "a,password", "localhost", "redis://u:p@h:7000/2", "rediss://h",
		"h:1,,ssl=true, user = u ", "h:1,channelPrefix=hubfabric:h:chat:g:x:", "h:99999", "=x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := redisbp.ParseConnectionString(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "redisbp: connection string") {
				t.Fatalf("ParseConnectionString(%q) error %q does not say it is about the connection string", s, err)
			}
			return
		}
		if len(o.Addrs) == 0 {
			t.Fatalf("ParseConnectionString(%q) accepted a string without endpoints", s)
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("ParseConnectionString(%q) = %+v, which Validate refuses: %v", s, o, err)
		}
		if strings.HasPrefix(strings.TrimSpace(s), "redis") {
			return // a URL: its endpoint is go-redis's
		}
		again, err := redisbp.ParseConnectionString(strings.Join(o.Addrs, ","))
		if err != nil || !reflect.DeepEqual(again.Addrs, o.Addrs) {
			t.Fatalf("endpoints %q of %q do not parse again: %v, %q", o.Addrs, s, err, again.Addrs)
		}
	})
}
