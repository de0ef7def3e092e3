package transport

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"io"
	"strings"
	"sync"
	"time"
)

// Connection tokens are 16 bytes, base64url without padding (22 characters),
// the same length SignalR uses:
//
//	bytes 0-3   issue time, Unix seconds, big endian
//	bytes 4-9   random
//	bytes 10-15 HMAC-SHA256(secret, bytes 0-9 + user id), truncated
//
// A node that knows its id (Options.NodeID) appends "." and its id,
// base64url, to the tokens it mints, and the MAC covers that id too: the
// token's home node, which owns the connection when the client uses long
// polling (any node that gets one of its polls, sends or deletes forwards
// it there). Tokens without a home are 22 characters.
//
// Any node that shares the secret can check a token and derive its
// connection id, so a negotiate answered by one node and a WebSocket opened
// on another work together without shared state or sticky sessions. The MAC
// covers the user id of the negotiate request, so a token only connects the
// same user. A token connects once per node; a replay on another node
// within the TTL is not detected (that would need shared state).
const (
	tokenBytes = 16
	tokenMAC   = 6
)

var (
	errTokenInvalid = errors.New("connection token is not valid")
	errTokenExpired = errors.New("connection token has expired")
	errTokenUsed    = errors.New("connection token was already used")
	errTokenActive  = errors.New("connection token is in use by an active connection")
)

var b64 = base64.RawURLEncoding.Strict()

// tokens mints and checks connection tokens and remembers, until they
// expire, the tokens used on this node, so a token connects at most once.
type tokens struct {
	secret []byte
	home   string // this node's id, put into minted tokens; "" for none
	ttl    time.Duration
	now    func() time.Time

	mu     sync.Mutex
	used   map[string]tokenUse
	sweepN int

	// macs holds HMAC-SHA256 states keyed with secret, for use again:
	// making one costs ~660 B, and a connection needs four (two to mint
	// its token, two to check it).
	macs sync.Pool
}

type tokenUse struct {
	expires time.Time
	active  bool
}

func newTokens(secret []byte, ttl time.Duration, now func() time.Time) *tokens {
	return &tokens{secret: secret, ttl: ttl, now: now, used: make(map[string]tokenUse)}
}

// hmacSHA256 returns a fresh HMAC-SHA256 keyed with the secret; give it
// back with putHMAC.
func (t *tokens) hmacSHA256() hash.Hash {
	if m, ok := t.macs.Get().(hash.Hash); ok {
		m.Reset()
		return m
	}
	return hmac.New(sha256.New, t.secret)
}

func (t *tokens) putHMAC(m hash.Hash) { t.macs.Put(m) }

// mac is the HMAC of data and userID, appended to dst.
func (t *tokens) mac(dst, data []byte, userID string) []byte {
	m := t.hmacSHA256()
	m.Write(data)
	m.Write([]byte{0})
	io.WriteString(m, userID)
	dst = m.Sum(dst)
	t.putHMAC(m)
	return dst
}

// mint returns a new token and the connection id it stands for. With
// legacy (negotiateVersion 0) the client connects with the id itself, so the
// id is the token; a flag bit in the random part records that.
func (t *tokens) mint(legacy bool, userID string) (token, connID string) {
	return t.mintWith(legacy, false, userID)
}

// mintWith is mint; stateful records, in a second flag bit covered by the
// MAC, that negotiate granted stateful reconnect (see isStateful).
func (t *tokens) mintWith(legacy, stateful bool, userID string) (token, connID string) {
	var raw [tokenBytes]byte
	binary.BigEndian.PutUint32(raw[:4], uint32(t.now().Unix()))
	if _, err := rand.Read(raw[4 : tokenBytes-tokenMAC]); err != nil {
		panic("transport: crypto/rand failed: " + err.Error())
	}
	raw[4] &^= 3
	if legacy {
		raw[4] |= 1
	}
	if stateful {
		raw[4] |= 2
	}
	var buf signedBuf
	var sum [sha256.Size]byte
	copy(raw[tokenBytes-tokenMAC:], t.mac(sum[:0], buf.signed(raw[:tokenBytes-tokenMAC], t.home), userID))
	token = b64.EncodeToString(raw[:])
	if t.home != "" {
		token += "." + b64.EncodeToString([]byte(t.home))
	}
	return token, t.connectionID(buf.signed(raw[:], t.home), token)
}

// signedBuf holds what a token's MAC covers (signed), so building it
// allocates nothing: a token's bytes, '.' and a home node id.
type signedBuf [tokenBytes + 1 + maxHomeLen]byte

// signed is what a token's MAC covers: its first bytes and, for a token
// with a home node, the node's id. It is raw itself or in b.
func (b *signedBuf) signed(raw []byte, home string) []byte {
	if home == "" {
		return raw
	}
	return append(append(append(b[:0], raw...), '.'), home...)
}

// maxTokenLen bounds a token before it is decoded: 22 characters and a
// home node id of up to 255 bytes.
var maxTokenLen = b64.EncodedLen(tokenBytes) + 1 + b64.EncodedLen(maxHomeLen)

// maxHomeLen bounds a home node id (Options.NodeID with a Relay).
const maxHomeLen = 255

// check verifies token for userID and its age, and returns its connection
// id and home node ("" for none), without claiming it.
func (t *tokens) check(token, userID string) (connID, home string, err error) {
	connID, home, _, err = t.checkAge(token, userID)
	return connID, home, err
}

// checkAge is check, also returning when the token was issued.
func (t *tokens) checkAge(token, userID string) (connID, home string, issued time.Time, err error) {
	connID, home, issued, err = t.verify(token, userID)
	if err != nil {
		return "", "", time.Time{}, err
	}
	now := t.now()
	if now.Sub(issued) > t.ttl || issued.Sub(now) > time.Minute {
		return "", "", time.Time{}, errTokenExpired
	}
	return connID, home, issued, nil
}

// verify checks token's signature for userID (not its age) and returns
// its connection id, home node and time of issue.
func (t *tokens) verify(token, userID string) (connID, home string, issued time.Time, err error) {
	if len(token) > maxTokenLen {
		return "", "", time.Time{}, errTokenInvalid // checked first: a long query is not decoded
	}
	base, homePart, hasHome := strings.Cut(token, ".")
	if len(base) != b64.EncodedLen(tokenBytes) {
		return "", "", time.Time{}, errTokenInvalid
	}
	var rawBuf [tokenBytes]byte
	raw := rawBuf[:]
	if n, err := b64.Decode(raw, []byte(base)); err != nil || n != tokenBytes {
		return "", "", time.Time{}, errTokenInvalid
	}
	if hasHome {
		var h [maxHomeLen]byte // the length check above bounds it
		n, err := b64.Decode(h[:], []byte(homePart))
		if err != nil || n == 0 {
			return "", "", time.Time{}, errTokenInvalid
		}
		home = string(h[:n])
	}
	var buf signedBuf
	var sum [sha256.Size]byte
	if !hmac.Equal(raw[tokenBytes-tokenMAC:], t.mac(sum[:0], buf.signed(raw[:tokenBytes-tokenMAC], home), userID)[:tokenMAC]) {
		return "", "", time.Time{}, errTokenInvalid
	}
	issued = time.Unix(int64(binary.BigEndian.Uint32(raw[:4])), 0)
	return t.connectionID(buf.signed(raw, home), token), home, issued, nil
}

func (t *tokens) connectionID(raw []byte, token string) string {
	if raw[4]&1 == 1 {
		return token
	}
	m := t.hmacSHA256()
	io.WriteString(m, "connection-id:")
	m.Write(raw)
	var sum [sha256.Size]byte
	id := b64.EncodeToString(m.Sum(sum[:0])[:16])
	t.putHMAC(m)
	return id
}

// claim checks token for userID and marks it active on this node. It
// returns the connection id, or an error saying why the token is refused.
func (t *tokens) claim(token, userID string) (string, error) {
	connID, _, issued, err := t.checkAge(token, userID)
	if err != nil {
		return "", err
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.used[token]; ok {
		if u.active {
			return "", errTokenActive
		}
		return "", errTokenUsed
	}
	t.used[token] = tokenUse{expires: issued.Add(t.ttl + time.Minute), active: true}
	t.sweepLocked(now)
	return connID, nil
}

// claimResume checks token for userID as claim does, except that neither
// its age nor an earlier use refuses it: a stateful connection's reconnect
// may come long after negotiate, and to a node the connection was on
// before (it moved away and back). Only a resume of a live connection may
// follow (the caller sees to it). It marks the token active, and fails
// with errTokenActive when it is.
func (t *tokens) claimResume(token, userID string) (string, error) {
	connID, _, _, err := t.verify(token, userID)
	if err != nil {
		return "", err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	u, ok := t.used[token]
	if ok && u.active {
		return "", errTokenActive
	}
	// Kept while the connection lives, and refused for a fresh connection
	// for a minute after, as any used token.
	t.used[token] = tokenUse{expires: t.now().Add(time.Minute), active: true}
	return connID, nil
}

// release marks a claimed token as no longer active; it stays refused
// until it expires.
func (t *tokens) release(token string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u, ok := t.used[token]; ok {
		u.active = false
		t.used[token] = u
	}
}

// sweepLocked drops expired inactive entries, amortized over claims.
func (t *tokens) sweepLocked(now time.Time) {
	t.sweepN++
	if t.sweepN < 256 {
		return
	}
	t.sweepN = 0
	for k, u := range t.used {
		if !u.active && now.After(u.expires) {
			delete(t.used, k)
		}
	}
}

// isStateful reports whether token, already checked by claim, was minted
// for a connection that negotiated stateful reconnect.
func isStateful(token string) bool {
	base, _, _ := strings.Cut(token, ".") // a home node may follow
	raw, err := b64.DecodeString(base)
	return err == nil && len(raw) == tokenBytes && raw[4]&2 != 0
}

// newConnectionID returns a random id for a connection that skipped
// negotiation.
func newConnectionID() string {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		panic("transport: crypto/rand failed: " + err.Error())
	}
	return b64.EncodeToString(raw[:])
}
