package redisbp_test

import (
	"strings"
	"testing"

	"pgregory.net/rapid"

	redisbp "github.com/hubfabric/hubfabric/backplane/redis"
)

// hashTag is the part of a Redis key (or sharded channel) that picks its
// cluster slot: between the first '{' and the next '}', when that is not
// empty; else the whole name (the Redis Cluster specification).
func hashTag(name string) string {
	if i := strings.IndexByte(name, '{'); i >= 0 {
		if j := strings.IndexByte(name[i+1:], '}'); j > 0 {
			return name[i+1 : i+1+j]
		}
	}
	return name
}

// drawPrefix draws a prefix candidate: a valid one most of the time, else
// one built of channel syntax (the report's "hubfabric:h:chat:g:x:") or
// any string.
func drawPrefix(t *rapid.T, label string) string {
	return rapid.OneOf(
		rapid.SampledFrom([]string{"hubfabric:", "h:", "n:", "g:", "x:", "app:", "app2:", "a.b-c_d:"}),
		rapid.StringMatching(`[A-Za-z0-9._-]{1,10}:`),
		rapid.Map(rapid.SliceOfN(rapid.SampledFrom([]string{"hubfabric:", "h:", "chat:", "g:", "x:", "x", "n:", "{p1}", "}"}), 1, 5),
			func(p []string) string { return strings.Join(p, "") }),
		rapid.String(),
	).Draw(t, label)
}

// drawChannel draws a node-side channel name: the fixed forms the actors
// use (package actors' TestChannelNamesAreUnambiguous checks those are
// distinct) with any user-chosen last component, or any string at all.
func drawChannel(t *rapid.T, label string) string {
	name := strings.Join(rapid.SliceOfN(rapid.OneOf(
		rapid.SampledFrom([]string{":", "h:", "n:", "g:", "all", "chat", "{", "}", "{p1}", "hubfabric:", "x"}),
		rapid.String()), 0, 4).Draw(t, label+".name"), "")
	return rapid.OneOf(
		rapid.SampledFrom([]string{"h:chat:all", "h:chat:g:" + name, "h:chat:u:" + name, "h:chat:c:" + name, "n:" + name}),
		rapid.Just(name),
	).Draw(t, label)
}

type redisRoute struct {
	prefix  string
	sharded bool
	channel string
}

// TestRedisChannelNamesAreUnambiguous: for any two prefixes that
// ValidChannelPrefix accepts and any
// node-side channel names, two different (prefix, channel) pairs never
// share a Redis channel, in classic or sharded mode, so no app hears or
// speaks on another's channels whatever its groups, users, connections
// and nodes are called; and in sharded mode the hash tag is always the
// partition's "p<N>", whatever braces a name holds, so no name picks the
// slot.
func TestRedisChannelNamesAreUnambiguous(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		partitions := rapid.IntRange(1, 32).Draw(t, "partitions")
		sharded := rapid.Bool().Draw(t, "sharded")
		a := redisRoute{drawPrefix(t, "a.prefix"), sharded, drawChannel(t, "a.channel")}
		b := redisRoute{drawPrefix(t, "b.prefix"), sharded, drawChannel(t, "b.channel")}
		if redisbp.ValidChannelPrefix(a.prefix) != nil || redisbp.ValidChannelPrefix(b.prefix) != nil {
			return // refused: no backplane uses it
		}
		na := redisbp.RedisChannelName(a.prefix, partitions, sharded, a.channel)
		nb := redisbp.RedisChannelName(b.prefix, partitions, sharded, b.channel)
		if a != b && na == nb {
			t.Fatalf("%+v and %+v share the Redis channel %q", a, b, na)
		}
		if sharded {
			tag := hashTag(na)
			if !strings.HasPrefix(na, "{"+tag+"}") || len(tag) < 2 || tag[0] != 'p' || strings.Trim(tag[1:], "0123456789") != "" {
				t.Fatalf("sharded channel %q has hash tag %q, want its partition's p<N> at the start", na, tag)
			}
		}
	})
}

// TestChannelPrefixAttacks: the prefixes of the "Hardening" report, which
// read as the start of another app's channels, are refused everywhere a
// prefix comes in; valid prefixes keep the report's group names in their
// own app.
func TestChannelPrefixAttacks(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"hubfabric:h:chat:g:x", "hubfabric:h:chat:g:x:", "hubfabric:h:", "hubfabric", "{p3}hubfabric:"} {
		if redisbp.ValidChannelPrefix(p) == nil {
			t.Errorf("ValidChannelPrefix(%q) accepted it", p)
		}
		if err := (redisbp.Options{ChannelPrefix: p}).Validate(); err == nil {
			t.Errorf("Options.Validate accepted ChannelPrefix %q", p)
		}
		if _, err := redisbp.ParseConnectionString("h:1,channelPrefix=" + p); err == nil {
			t.Errorf("ParseConnectionString accepted channelPrefix=%q", p)
		}
	}
	// With prefixes that pass, the first app's groups named after the
	// second app's channels stay apart from them.
	for _, sharded := range []bool{false, true} {
		for _, c := range []struct{ group, other string }{
			{"x:h:chat:all", "h:chat:all"},
			{"x:n:NODE", "n:NODE"},
		} {
			mine := redisbp.RedisChannelName("hubfabric:", 16, sharded, "h:chat:g:"+c.group)
			for _, otherPrefix := range []string{"hubfabric:", "x:", "g:", "h:"} {
				if theirs := redisbp.RedisChannelName(otherPrefix, 16, sharded, c.other); theirs == mine {
					t.Errorf("group %q of app hubfabric: is %q, the channel of %q in app %q", c.group, mine, c.other, otherPrefix)
				}
			}
		}
	}
}
