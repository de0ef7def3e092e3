package redisbp

import (
	"context"
	"errors"
	"fmt"

	"github.com/hubfabric/hubfabric/backplane"
)

var _ backplane.SharedSecrets = (*Backplane)(nil)

// SecretKey is the Redis key SharedSecret keeps name's value under: the
// channel prefix, "secret:" and name, so apps with different prefixes on
// one Redis keep different secrets.
func (b *Backplane) SecretKey(name string) string { return b.opts.ChannelPrefix + "secret:" + name }

// SharedSecret implements backplane.SharedSecrets with Redis: SET NX of
// proposal under SecretKey(name) (no expiry), then GET, so every backplane
// with this prefix on this Redis gets the value of the first SET. Anyone
// who can read that key can mint connection tokens for these nodes:
// protect the Redis as you would the secret. ctx bounds it (when it has
// no deadline, Options.ConnectTimeout); failures wrap
// backplane.ErrUnavailable.
func (b *Backplane) SharedSecret(ctx context.Context, name string, proposal []byte) ([]byte, error) {
	if len(proposal) == 0 {
		return nil, errors.New("redisbp: SharedSecret with an empty proposal")
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, backplane.ErrClosed
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.opts.ConnectTimeout)
		defer cancel()
	}
	key := b.SecretKey(name)
	if err := b.client.SetNX(ctx, key, proposal, 0).Err(); err != nil {
		return nil, fmt.Errorf("redis backplane: SET NX %s: %w: %w", key, backplane.ErrUnavailable, err)
	}
	v, err := b.client.Get(ctx, key).Bytes()
	if err != nil {
		return nil, fmt.Errorf("redis backplane: GET %s: %w: %w", key, backplane.ErrUnavailable, err)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("redis backplane: %s holds an empty value; delete it or give the nodes a secret", key)
	}
	return v, nil
}
