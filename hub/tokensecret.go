package hub

import (
	"context"

	"github.com/hubfabric/hubfabric/backplane"
)

// tokenSecretName is the name of the connection-token key among the
// backplane's shared secrets.
const tokenSecretName = "connection-token"

// tokenSecret is the connection-token key the node serves with: the given
// Config.TokenSecret, else the one the nodes on the backplane agree on
// (the first node's random key wins), else, when the backplane cannot
// share one or is unreachable, the node's own random key (then a client
// must connect to the node it negotiated with; logged at warn).
func (n *Node) tokenSecret(ctx context.Context) []byte {
	c := n.cfg
	if !c.tokenSecretRandom {
		return c.TokenSecret
	}
	ss, ok := backplane.Ability[backplane.SharedSecrets](c.Backplane)
	if !ok {
		return c.TokenSecret
	}
	sctx, cancel := context.WithTimeout(ctx, c.BackplaneTimeout)
	defer cancel()
	secret, err := ss.SharedSecret(sctx, tokenSecretName, c.TokenSecret)
	if err != nil {
		n.log.Warn("no connection-token secret shared through the backplane; using this node's own, so clients must connect to the node they negotiated with until it restarts (or give every node the same token secret)", "err", err)
		return c.TokenSecret
	}
	return secret
}
