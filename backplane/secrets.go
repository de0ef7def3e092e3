package backplane

import (
	"bytes"
	"context"
	"errors"
)

var _ SharedSecrets = (*Memory)(nil)

// SharedSecret implements SharedSecrets for every Memory of one bus: the
// first proposal for name is kept and returned to every caller. It fails
// with ErrClosed after Close and with ErrUnavailable while the backplane is
// made unavailable (SetAvailable).
func (m *Memory) SharedSecret(ctx context.Context, name string, proposal []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(proposal) == 0 {
		return nil, errors.New("backplane: SharedSecret with an empty proposal")
	}
	m.mu.Lock()
	closed, available := m.closed, m.available
	m.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case !available:
		return nil, errUnavailableInjected
	}
	b := m.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.secrets[name]; ok {
		return bytes.Clone(v), nil
	}
	if b.secrets == nil {
		b.secrets = make(map[string][]byte)
	}
	b.secrets[name] = bytes.Clone(proposal)
	return bytes.Clone(proposal), nil
}
