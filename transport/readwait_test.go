package transport

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// A readWaiter gives up its reader's buffer only while the reader is
// empty, grows it with bytes buffered or not, and the bytes read through
// it arrive whole and in order across both sizes, then shrink and grow
// again.
func TestReadWaiterShrinksWhenEmptyAndGrowsCarryingBytes(t *testing.T) {
	server, client := tcpPair(t)
	br := bufio.NewReaderSize(server, readBufferSize)
	w := newReadWaiter(server, br)
	if w == nil {
		t.Fatal("no readWaiter for a TCP socket")
	}
	want := bytes.Repeat([]byte("0123456789"), 30)
	if _, err := client.Write(want[:100]); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0, len(want))
	one := make([]byte, 1)
	if _, err := br.Peek(100); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(br, one); err != nil { // br buffers the other 99
		t.Fatal(err)
	}
	got = append(got, one...)
	w.shrink()
	if br.Size() != readBufferSize {
		t.Fatalf("shrink with %d bytes buffered left a %d-byte buffer, want it kept (%d)", br.Buffered(), br.Size(), readBufferSize)
	}
	rest := make([]byte, br.Buffered())
	if _, err := io.ReadFull(br, rest); err != nil {
		t.Fatal(err)
	}
	got = append(got, rest...)

	w.shrink()
	if br.Size() != parkedReadBufferSize {
		t.Fatalf("shrink of an empty reader left a %d-byte buffer, want %d", br.Size(), parkedReadBufferSize)
	}
	if _, err := client.Write(want[100:]); err != nil {
		t.Fatal(err)
	}
	if _, err := br.Peek(2); err != nil { // through the small buffer
		t.Fatal(err)
	}
	if _, err := io.ReadFull(br, one); err != nil {
		t.Fatal(err)
	}
	got = append(got, one...)
	w.grow() // with bytes buffered: they are carried over
	if br.Size() != readBufferSize {
		t.Fatalf("grow made a %d-byte buffer, want %d", br.Size(), readBufferSize)
	}
	rest = make([]byte, len(want)-len(got))
	if _, err := io.ReadFull(br, rest); err != nil {
		t.Fatal(err)
	}
	got = append(got, rest...)
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}

	// Empty again: the buffer goes, and comes back for the next bytes.
	w.shrink()
	if br.Size() != parkedReadBufferSize {
		t.Fatalf("shrink after reading everything left a %d-byte buffer, want %d", br.Size(), parkedReadBufferSize)
	}
	w.grow()
	if br.Size() != readBufferSize {
		t.Fatalf("grow of an empty reader made a %d-byte buffer, want %d", br.Size(), readBufferSize)
	}
	if _, err := client.Write([]byte("end")); err != nil {
		t.Fatal(err)
	}
	end := make([]byte, 3)
	if _, err := io.ReadFull(br, end); err != nil || string(end) != "end" {
		t.Fatalf("after shrink and grow read %q, %v; want \"end\"", end, err)
	}
}
