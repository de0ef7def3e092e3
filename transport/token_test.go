package transport

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	tk := newTokens([]byte("secret"), time.Minute, clock)

	token, id := tk.mint(false, "alice")
	if len(token) != 22 || len(id) != 22 {
		t.Fatalf("token %q and id %q must be 22 characters", token, id)
	}
	if strings.ContainsAny(token+id, "+/=") {
		t.Fatalf("token %q or id %q is not URL-safe", token, id)
	}
	if token == id {
		t.Fatal("the token must differ from the public id")
	}
	got, err := tk.claim(token, "alice")
	if err != nil || got != id {
		t.Fatalf("claim = %q, %v; want %q", got, err, id)
	}
	if _, err := tk.claim(token, "alice"); err != errTokenActive {
		t.Fatalf("second claim while active = %v, want errTokenActive", err)
	}
	tk.release(token)
	if _, err := tk.claim(token, "alice"); err != errTokenUsed {
		t.Fatalf("claim after release = %v, want errTokenUsed", err)
	}

	// Another node with the same secret derives the same id: no sticky sessions.
	other := newTokens([]byte("secret"), time.Minute, clock)
	if got, err := other.claim(token, "alice"); err != nil || got != id {
		t.Fatalf("other node claim = %q, %v; want %q", got, err, id)
	}
	// A node with another secret refuses it.
	if _, err := newTokens([]byte("other"), time.Minute, clock).claim(token, "alice"); err != errTokenInvalid {
		t.Fatalf("claim with another secret = %v, want errTokenInvalid", err)
	}

	// A token negotiated by alice does not connect bob.
	bobs, _ := tk.mint(false, "alice")
	if _, err := tk.claim(bobs, "bob"); err != errTokenInvalid {
		t.Fatalf("claim of alice's token by bob = %v, want errTokenInvalid", err)
	}

	legacyToken, legacyID := tk.mint(true, "")
	if legacyToken != legacyID {
		t.Fatalf("negotiateVersion 0 needs id == token, got %q and %q", legacyID, legacyToken)
	}
	if got, err := tk.claim(legacyToken, ""); err != nil || got != legacyID {
		t.Fatalf("legacy claim = %q, %v", got, err)
	}

	flipped := []byte(token)
	if flipped[10] == 'A' {
		flipped[10] = 'B'
	} else {
		flipped[10] = 'A'
	}
	for _, bogus := range []string{"", "short", strings.Repeat("A", 22), string(flipped), "!!!!!!!!!!!!!!!!!!!!!!"} {
		if _, err := tk.claim(bogus, "alice"); err != errTokenInvalid {
			t.Errorf("claim(%q) = %v, want errTokenInvalid", bogus, err)
		}
	}

	expiring, _ := tk.mint(false, "alice")
	now = now.Add(2 * time.Minute)
	if _, err := tk.claim(expiring, "alice"); err != errTokenExpired {
		t.Fatalf("claim of an old token = %v, want errTokenExpired", err)
	}
}

// TestClaimResume: a stateful reconnect's token is accepted however old, and after an
// earlier use (the connection left this node and comes back), but never while active, never
// for another user, never forged.
func TestClaimResume(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	tk := newTokens([]byte("secret"), time.Minute, func() time.Time { return now })
	token, id := tk.mint(false, "alice")
	if _, err := tk.claim(token, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.claimResume(token, "alice"); err != errTokenActive {
		t.Fatalf("claimResume while the token is active = %v, want errTokenActive", err)
	}
	tk.release(token)
	now = now.Add(time.Hour) // long past the TTL
	if _, err := tk.claim(token, "alice"); err != errTokenExpired {
		t.Fatalf("claim of the old token = %v, want errTokenExpired", err)
	}
	if got, err := tk.claimResume(token, "alice"); err != nil || got != id {
		t.Fatalf("claimResume of a used, old token = %q, %v; want %q", got, err, id)
	}
	if _, err := tk.claimResume(token, "alice"); err != errTokenActive {
		t.Fatalf("second claimResume = %v, want errTokenActive", err)
	}
	tk.release(token)
	if _, err := tk.claim(token, "alice"); err == nil {
		t.Fatal("after a resume the token connects a fresh connection")
	}
	if _, err := tk.claimResume(token, "bob"); err != errTokenInvalid {
		t.Fatalf("claimResume by another user = %v, want errTokenInvalid", err)
	}
	if _, err := tk.claimResume(strings.Repeat("A", 22), "alice"); err != errTokenInvalid {
		t.Fatalf("claimResume of a forged token = %v, want errTokenInvalid", err)
	}
}

// FuzzTokenClaim: whatever a client puts in ?id=, claim never panics and
// accepts nothing but a token this secret minted (for that user); a long
// value is refused before it is decoded.
func FuzzTokenClaim(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	minter := newTokens([]byte("secret"), time.Minute, clock)
	valid, _ := minter.mint(false, "alice")
	for _, s := range []string{valid, "", "AAAAAAAAAAAAAAAAAAAAAA", valid + "A", strings.Repeat("A", 1<<16), "%%%%", valid[:21] + "!"} {
		f.Add(s, "alice")
	}
	f.Fuzz(func(t *testing.T, token, user string) {
		tk := newTokens([]byte("secret"), time.Minute, clock)
		// A resume's claim skips only the age and the earlier use: it
		// accepts no token that claim refuses as invalid.
		_, rerr := newTokens([]byte("secret"), time.Minute, clock).claimResume(token, user)
		id, err := tk.claim(token, user)
		if (rerr == nil) != (err == nil) {
			t.Fatalf("claim(%q, %q) = %v but claimResume = %v", token, user, err, rerr)
		}
		if err != nil {
			return
		}
		// Accepted: the token is bound to this secret and this user.
		if _, err := newTokens([]byte("other secret"), time.Minute, clock).claim(token, user); err == nil {
			t.Fatalf("claim(%q, %q) = %q, and another secret accepts it too", token, user, id)
		}
		if _, err := newTokens([]byte("secret"), time.Minute, clock).claim(token, user+"x"); err == nil {
			t.Fatalf("claim(%q, %q) = %q, and another user may use it too", token, user, id)
		}
	})
}

// TestNodeIDFitsTokens: the tokens a node with a Relay mints carry its
// NodeID, and check refuses tokens longer than maxTokenLen (a home of up
// to 255 bytes). A longer NodeID was accepted, and then every token the
// node minted was refused ("not valid"), WebSockets included: the node
// served nothing. NewServer now refuses such a NodeID; one of 255 bytes
// works.
func TestNodeIDFitsTokens(t *testing.T) {
	t.Parallel()
	connect := func(context.Context, ConnectRequest) (Session, error) { return nil, nil }
	for _, n := range []int{255, 256, 300} {
		opts := testOptions(connect)
		opts.NodeID, opts.Relay = strings.Repeat("n", n), blockingRelay{}
		s, err := NewServer(opts)
		if n > 255 {
			if err == nil {
				tok, _ := s.tokens.mint(false, "alice")
				_, _, cerr := s.tokens.check(tok, "alice")
				t.Fatalf("NewServer with a NodeID of %d bytes: no error (its own token checks: %v)", n, cerr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("NewServer with a NodeID of %d bytes: %v", n, err)
		}
		tok, _ := s.tokens.mint(false, "alice")
		if _, home, err := s.tokens.check(tok, "alice"); err != nil || home != opts.NodeID {
			t.Fatalf("a token of a node whose id has %d bytes: home %d bytes, %v", n, len(home), err)
		}
	}
}

// BenchmarkTokenMintAndCheck is a connection's token work: negotiate mints
// a token (with a home node, as a node with a NodeID does), the WebSocket
// request checks it.
func BenchmarkTokenMintAndCheck(b *testing.B) {
	tk := newTokens([]byte("0123456789abcdef0123456789abcdef"), time.Minute, time.Now)
	tk.home = "node-1"
	b.ReportAllocs()
	for b.Loop() {
		token, id := tk.mint(false, "alice")
		got, _, err := tk.check(token, "alice")
		if err != nil || got != id {
			b.Fatalf("check: %q, %v; want %q", got, err, id)
		}
	}
}
