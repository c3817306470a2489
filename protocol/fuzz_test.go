package protocol

import (
	"bytes"
	"testing"
)

// FuzzSplitParams checks that the command-line splitter never panics, never
// returns more than MaxParams tokens and that its tokens are pieces of the
// line.
func FuzzSplitParams(f *testing.F) {
	for _, s := range []string{"NOP", "RDY  5", "SUB t c\r", "REQ id 10 a b c", "", " ", "FIN 0123456789abcdef"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var buf [MaxParams][]byte
		toks := SplitParams(line, buf[:0])
		if len(toks) == 0 || len(toks) > MaxParams {
			t.Fatalf("%d tokens", len(toks))
		}
		for _, tok := range toks {
			if bytes.IndexByte(tok, ' ') >= 0 {
				t.Fatalf("token %q has a space", tok)
			}
		}
		ParseUint(toks[len(toks)-1], 1<<32)
	})
}

// FuzzParseMPUB checks the MPUB body parser: no panic, and every accepted
// body re-encodes to exactly the input.
func FuzzParseMPUB(f *testing.F) {
	f.Add(AppendMPUB(nil, "t", [][]byte{[]byte("a"), []byte("bb")})[len("MPUB t\n")+4:])
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 2, 0, 0, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, perr := ParseMPUB(body, 1024, 1<<20, nil)
		if perr != nil {
			if !perr.Fatal || perr.Code == "" {
				t.Fatalf("bad error %#v", perr)
			}
			return
		}
		re := AppendMPUB(nil, "t", msgs)[len("MPUB t\n")+4:]
		if !bytes.Equal(re, body) {
			t.Fatalf("round trip mismatch")
		}
	})
}

// FuzzDecodeMessage checks the message codec round trip.
func FuzzDecodeMessage(f *testing.F) {
	id := NewMessageID(42)
	f.Add(AppendMessage(nil, 1, 2, &id, []byte("body")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, att, id, body, err := DecodeMessage(b)
		if err != nil {
			if len(b) >= MessageHeaderSize {
				t.Fatal("rejected a long enough message")
			}
			return
		}
		if re := AppendMessage(nil, ts, att, &id, body); !bytes.Equal(re, b) {
			t.Fatal("round trip mismatch")
		}
	})
}
