package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// This file holds a minimal, allocation-free MessagePack reader over one
// length-delimited message body. Every length is checked against the bytes
// that remain, so hostile input can neither over-read nor make us allocate
// more than it is long.

var errMPShort = errors.New("unexpected end of data")

type mpReader struct {
	b []byte
	i int
}

func (r *mpReader) byte1() (byte, error) {
	if r.i >= len(r.b) {
		return 0, errMPShort
	}
	c := r.b[r.i]
	r.i++
	return c, nil
}

func (r *mpReader) take(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)-r.i) {
		return nil, errMPShort
	}
	s := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return s, nil
}

func (r *mpReader) uintN(n int) (uint64, error) {
	s, err := r.take(uint64(n))
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return uint64(s[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(s)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(s)), nil
	default:
		return binary.BigEndian.Uint64(s), nil
	}
}

// mpKindName names the MessagePack type of a leading byte, for errors.
func mpKindName(c byte) string {
	switch {
	case c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xd3):
		return "integer"
	case c >= 0x80 && c <= 0x8f, c == 0xde, c == 0xdf:
		return "map"
	case c >= 0x90 && c <= 0x9f, c == 0xdc, c == 0xdd:
		return "array"
	case c >= 0xa0 && c <= 0xbf, c == 0xd9, c == 0xda, c == 0xdb:
		return "string"
	case c == 0xc0:
		return "nil"
	case c == 0xc2, c == 0xc3:
		return "boolean"
	case c == 0xc4, c == 0xc5, c == 0xc6:
		return "binary"
	case c == 0xca, c == 0xcb:
		return "float"
	case c == 0xc1:
		return "reserved byte 0xc1"
	default:
		return "extension"
	}
}

func (r *mpReader) peek() (byte, error) {
	if r.i >= len(r.b) {
		return 0, errMPShort
	}
	return r.b[r.i], nil
}

// arrayLen reads an array header.
func (r *mpReader) arrayLen() (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c >= 0x90 && c <= 0x9f:
		n = uint64(c & 0x0f)
	case c == 0xdc:
		n, err = r.uintN(2)
	case c == 0xdd:
		n, err = r.uintN(4)
	default:
		return 0, fmt.Errorf("expected array, got %s", mpKindName(c))
	}
	if err != nil {
		return 0, err
	}
	if n > uint64(len(r.b)-r.i) { // every item needs at least one byte
		return 0, errMPShort
	}
	return int(n), nil
}

// mapLen reads a map header.
func (r *mpReader) mapLen() (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c >= 0x80 && c <= 0x8f:
		n = uint64(c & 0x0f)
	case c == 0xde:
		n, err = r.uintN(2)
	case c == 0xdf:
		n, err = r.uintN(4)
	default:
		return 0, fmt.Errorf("expected map, got %s", mpKindName(c))
	}
	if err != nil {
		return 0, err
	}
	if n > uint64(len(r.b)-r.i)/2 {
		return 0, errMPShort
	}
	return int(n), nil
}

// strOrNil reads a string, or nil (reported as isNil).
func (r *mpReader) strOrNil() (s string, isNil bool, err error) {
	c, err := r.byte1()
	if err != nil {
		return "", false, err
	}
	var n uint64
	switch {
	case c >= 0xa0 && c <= 0xbf:
		n = uint64(c & 0x1f)
	case c == 0xd9:
		n, err = r.uintN(1)
	case c == 0xda:
		n, err = r.uintN(2)
	case c == 0xdb:
		n, err = r.uintN(4)
	case c == 0xc0:
		return "", true, nil
	default:
		return "", false, fmt.Errorf("expected string, got %s", mpKindName(c))
	}
	if err != nil {
		return "", false, err
	}
	b, err := r.take(n)
	if err != nil {
		return "", false, err
	}
	return string(b), false, nil
}

// str reads a string (nil is an error).
func (r *mpReader) str() (string, error) {
	s, isNil, err := r.strOrNil()
	if err == nil && isNil {
		err = errors.New("expected string, got nil")
	}
	return s, err
}

// int64 reads any integer encoding that fits an int64.
func (r *mpReader) int64() (int64, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	}
	switch c {
	case 0xcc, 0xcd, 0xce, 0xcf:
		u, err := r.uintN(1 << (c - 0xcc))
		if err != nil {
			return 0, err
		}
		if u > math.MaxInt64 {
			return 0, errors.New("integer overflows int64")
		}
		return int64(u), nil
	case 0xd0:
		u, err := r.uintN(1)
		return int64(int8(u)), err
	case 0xd1:
		u, err := r.uintN(2)
		return int64(int16(u)), err
	case 0xd2:
		u, err := r.uintN(4)
		return int64(int32(u)), err
	case 0xd3:
		u, err := r.uintN(8)
		return int64(u), err
	}
	return 0, fmt.Errorf("expected integer, got %s", mpKindName(c))
}

// boolOrNil reads a boolean; nil reads as false.
func (r *mpReader) boolOrNil() (bool, error) {
	c, err := r.byte1()
	if err != nil {
		return false, err
	}
	switch c {
	case 0xc3:
		return true, nil
	case 0xc2, 0xc0:
		return false, nil
	}
	return false, fmt.Errorf("expected boolean, got %s", mpKindName(c))
}

// skip steps over one complete object (iteratively, so nesting depth cannot
// exhaust the stack) and validates its framing.
func (r *mpReader) skip() error {
	pending := uint64(1)
	for pending > 0 {
		pending--
		c, err := r.byte1()
		if err != nil {
			return err
		}
		var n uint64 // bytes of payload to skip
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
			continue
		case c >= 0x80 && c <= 0x8f:
			pending += 2 * uint64(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			pending += uint64(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			n = uint64(c & 0x1f)
		default:
			switch c {
			case 0xc1:
				return errors.New("reserved byte 0xc1")
			case 0xc4, 0xd9:
				n, err = r.uintN(1)
			case 0xc5, 0xda:
				n, err = r.uintN(2)
			case 0xc6, 0xdb:
				n, err = r.uintN(4)
			case 0xc7:
				n, err = r.uintN(1)
				n++
			case 0xc8:
				n, err = r.uintN(2)
				n++
			case 0xc9:
				n, err = r.uintN(4)
				n++
			case 0xca:
				n = 4
			case 0xcb:
				n = 8
			case 0xcc, 0xd0:
				n = 1
			case 0xcd, 0xd1:
				n = 2
			case 0xce, 0xd2:
				n = 4
			case 0xcf, 0xd3:
				n = 8
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
				n = 1 + 1<<(c-0xd4)
			case 0xdc:
				n, err = r.uintN(2)
				pending += n
				n = 0
			case 0xdd:
				n, err = r.uintN(4)
				pending += n
				n = 0
			case 0xde:
				n, err = r.uintN(2)
				pending += 2 * n
				n = 0
			case 0xdf:
				n, err = r.uintN(4)
				pending += 2 * n
				n = 0
			}
			if err != nil {
				return err
			}
		}
		if _, err := r.take(n); err != nil {
			return err
		}
		if pending > uint64(len(r.b)-r.i) {
			return errMPShort
		}
	}
	return nil
}

// mpMaxDepth bounds the nesting of values decoded into *any.
const mpMaxDepth = 10000

// toAny decodes one object into plain Go values: nil, bool, int64 (uint64
// only above math.MaxInt64), float64, string, []byte, []any, map[string]any
// (non-string keys are formatted with fmt.Sprint) and time.Time for the
// timestamp extension (-1), in UTC.
func (r *mpReader) toAny(depth int) (any, error) {
	if depth > mpMaxDepth {
		return nil, errors.New("value nested too deeply")
	}
	c, err := r.peek()
	if err != nil {
		return nil, err
	}
	switch {
	case c <= 0x7f, c >= 0xe0, c >= 0xd0 && c <= 0xd3:
		return r.int64()
	case c >= 0xcc && c <= 0xcf:
		r.i++
		u, err := r.uintN(1 << (c - 0xcc))
		if err != nil {
			return nil, err
		}
		if u > math.MaxInt64 {
			return u, nil
		}
		return int64(u), nil
	case c >= 0xa0 && c <= 0xbf, c >= 0xd9 && c <= 0xdb:
		return r.str()
	case c >= 0x90 && c <= 0x9f, c == 0xdc, c == 0xdd:
		n, err := r.arrayLen()
		if err != nil {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = r.toAny(depth + 1); err != nil {
				return nil, err
			}
		}
		return out, nil
	case c >= 0x80 && c <= 0x8f, c == 0xde, c == 0xdf:
		n, err := r.mapLen()
		if err != nil {
			return nil, err
		}
		out := make(map[string]any, n)
		for range n {
			k, err := r.toAny(depth + 1)
			if err != nil {
				return nil, err
			}
			v, err := r.toAny(depth + 1)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				ks = fmt.Sprint(k)
			}
			out[ks] = v
		}
		return out, nil
	}
	r.i++
	switch c {
	case 0xc0:
		return nil, nil
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xca:
		u, err := r.uintN(4)
		return float64(math.Float32frombits(uint32(u))), err
	case 0xcb:
		u, err := r.uintN(8)
		return math.Float64frombits(u), err
	case 0xc4, 0xc5, 0xc6:
		n, err := r.uintN(1 << (c - 0xc4))
		if err != nil {
			return nil, err
		}
		b, err := r.take(n)
		if err != nil {
			return nil, err
		}
		return append([]byte{}, b...), nil
	case 0xc1:
		return nil, errors.New("reserved byte 0xc1")
	}
	// Extension: re-read it whole and let the library decode timestamps.
	start := r.i - 1
	r.i = start
	if err := r.skip(); err != nil {
		return nil, err
	}
	ext := r.b[start:r.i]
	var typ int8
	switch c {
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		typ = int8(ext[1])
	case 0xc7:
		typ = int8(ext[2])
	case 0xc8:
		typ = int8(ext[3])
	case 0xc9:
		typ = int8(ext[5])
	}
	if typ != -1 {
		return nil, fmt.Errorf("unsupported extension type %d", typ)
	}
	var t time.Time
	if err := msgpack.Unmarshal(ext, &t); err != nil {
		return nil, err
	}
	return t.UTC(), nil
}
