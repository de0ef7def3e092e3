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
		{"host only gets port 6379", "localhost", redisbp.Options{Addrs: []string{"localhost:6379"}}},
		{"host:port", "redis.example:7000", redisbp.Options{Addrs: []string{"redis.example:7000"}}},
		{"ipv6 with port", "[::1]:7000", redisbp.Options{Addrs: []string{"[::1]:7000"}}},
		{"ipv6 without port", "[::1]", redisbp.Options{Addrs: []string{"[::1]:6379"}}},
		{"several endpoints mean cluster", "a:1,b:2,c", redisbp.Options{Addrs: []string{"a:1", "b:2", "c:6379"}}},
		{"password", "h,password=s3cr=t", redisbp.Options{Addrs: []string{"h:6379"}, Password: "s3cr=t"}},
		{"user", "h,user=alice", redisbp.Options{Addrs: []string{"h:6379"}, Username: "alice"}},
		{"ssl true", "h,ssl=true", redisbp.Options{Addrs: []string{"h:6379"}, TLS: true}},
		{"ssl False", "h,ssl=False", redisbp.Options{Addrs: []string{"h:6379"}}},
		{"channelPrefix", "h,channelPrefix=app1:", redisbp.Options{Addrs: []string{"h:6379"}, ChannelPrefix: "app1:"}},
		{"abortConnect", "h,abortConnect=true", redisbp.Options{Addrs: []string{"h:6379"}, AbortConnect: true}},
		{"serviceName means sentinel", "s1:26379,s2:26379,serviceName=mymaster",
			redisbp.Options{Addrs: []string{"s1:26379", "s2:26379"}, SentinelMaster: "mymaster"}},
		{"connectTimeout", "h,connectTimeout=250", redisbp.Options{Addrs: []string{"h:6379"}, ConnectTimeout: 250 * time.Millisecond}},
		{"defaultDatabase", "h,defaultDatabase=3", redisbp.Options{Addrs: []string{"h:6379"}, DB: 3}},
		{"keys are case-insensitive", "h,PASSWORD=p,AbortConnect=TRUE,CHANNELPREFIX=x,ConnectTimeout=10,DEFAULTDATABASE=1,User=u,SSL=true,servicename=m",
			redisbp.Options{Addrs: []string{"h:6379"}, Password: "p", AbortConnect: true, ChannelPrefix: "x",
				ConnectTimeout: 10 * time.Millisecond, DB: 1, Username: "u", TLS: true, SentinelMaster: "m"}},
		{"spaces and empty segments ignored", " h:1 , , password = p ", redisbp.Options{Addrs: []string{"h:1"}, Password: "p"}},
		{"last value wins", "h,user=a,user=b", redisbp.Options{Addrs: []string{"h:6379"}, Username: "b"}},
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
		{"h,foo=bar", `unknown option "foo"`},
		{"h,connectTimeout=abc", `connectTimeout "abc" is not a number of milliseconds`},
		{"h,connectTimeout=-5", `connectTimeout "-5" is not a number of milliseconds`},
		{"h,defaultDatabase=x", `defaultDatabase "x" is not a database number`},
		{"h,defaultDatabase=-1", `defaultDatabase "-1" is not a database number`},
		{"h,ssl=yes", `ssl "yes" is not true or false`},
		{"h,abortConnect=1", `abortConnect "1" is not true or false`},
		{"h,serviceName=", "serviceName is empty"},
		{"h,=v", "has no key"},
		{"password=p", "no host:port endpoint"},
		{"h:notaport", `port "notaport" is not a number`},
		{"h:0", `port "0" is not a number from 1 to 65535`},
		{"h:70000", `port "70000"`},
		{":6379", "has no host"},
		{"::1", "is not host:port"},
		{"redis://h?bogus=1", "URL"},
		{"redis://h/notadb", "URL"},
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
	if _, err := redisbp.NewFromString("h,foo=1"); err == nil || !strings.Contains(err.Error(), `unknown option "foo"`) {
		t.Errorf("NewFromString with an unknown option: %v", err)
	}
	if _, err := redisbp.NewFromString("h", func(o *redisbp.Options) { o.Sharded = 9 }); err == nil {
		t.Errorf("NewFromString with a bad override succeeded")
	}
	if _, err := redisbp.New(nil, redisbp.Options{}); err == nil {
		t.Errorf("New(nil) succeeded")
	}
}
