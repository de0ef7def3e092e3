package redisbp

// RedisChannelName is the Redis channel a Backplane with prefix and
// partitions uses for the node's channel, in sharded or classic mode: the
// real naming code, for tests.
func RedisChannelName(prefix string, partitions int, sharded bool, channel string) string {
	b := &Backplane{opts: Options{ChannelPrefix: prefix, Partitions: partitions}}
	if !sharded {
		return b.prefix(false, 0) + channel
	}
	return b.prefix(true, b.partition(channel)) + channel
}
