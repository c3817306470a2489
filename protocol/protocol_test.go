package protocol

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestIsValidName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"a", true}, {".", true}, {"a-b_c.d", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 54) + "#ephemeral", true},
		{strings.Repeat("a", 55) + "#ephemeral", false},
		{strings.Repeat("a", 65), false},
		{"", false}, {"a b", false}, {"../x", false}, {"x#ephemeralz", false},
		{"#ephemeral", false}, {"a:b", false}, {"a#b", false}, {"é", false},
	}
	for _, c := range cases {
		if got := IsValidName(c.name); got != c.ok {
			t.Errorf("IsValidName(%q) = %v, want %v", c.name, got, c.ok)
		}
	}
	if !IsEphemeral("x#ephemeral") || IsEphemeral("x") {
		t.Error("IsEphemeral wrong")
	}
}

func TestSplitParams(t *testing.T) {
	cases := []struct {
		line string
		want []string
	}{
		{"NOP", []string{"NOP"}},
		{"RDY  5", []string{"RDY", "", "5"}},
		{"SUB t c\r", []string{"SUB", "t", "c"}},
		{"REQ id 10 extra more", []string{"REQ", "id", "10", "extra"}},
		{"", []string{""}},
	}
	var buf [MaxParams][]byte
	for _, c := range cases {
		got := SplitParams([]byte(c.line), buf[:0])
		if len(got) != len(c.want) {
			t.Fatalf("%q: got %q want %q", c.line, got, c.want)
		}
		for i := range got {
			if string(got[i]) != c.want[i] {
				t.Fatalf("%q: got %q want %q", c.line, got, c.want)
			}
		}
	}
}

func TestParseUint(t *testing.T) {
	if v, ok := ParseUint([]byte("2500"), 1<<32); !ok || v != 2500 {
		t.Fatal(v, ok)
	}
	if v, ok := ParseUint(nil, 10); !ok || v != 0 {
		t.Fatal(v, ok)
	}
	for _, bad := range []string{"-1", "+1", "1a", "99999999999999999999999"} {
		if _, ok := ParseUint([]byte(bad), 1<<40); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseMPUB(t *testing.T) {
	cmd := AppendMPUB(nil, "t", [][]byte{[]byte("a"), []byte("bb")})
	want := []byte("MPUB t\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bb")
	if !bytes.Equal(cmd, want) {
		t.Fatalf("AppendMPUB = %q", cmd)
	}
	body := cmd[len("MPUB t\n")+4:]
	msgs, perr := ParseMPUB(body, 10, 1000, nil)
	if perr != nil || len(msgs) != 2 || string(msgs[1]) != "bb" {
		t.Fatalf("%q %v", msgs, perr)
	}
	mk := func(parts ...uint32) []byte {
		var b []byte
		for _, p := range parts {
			b = binary.BigEndian.AppendUint32(b, p)
		}
		return b
	}
	bad := []struct {
		body []byte
		want string
	}{
		{nil, "E_BAD_BODY MPUB failed to read message count"},
		{mk(0), "E_BAD_BODY MPUB invalid message count 0"},
		{mk(1000), "E_BAD_BODY MPUB invalid message count 1000"},
		{mk(0xffffffff), "E_BAD_BODY MPUB invalid message count -1"},
		{mk(2, 1), "E_BAD_MESSAGE MPUB failed to read message body"},
		{append(mk(1, 1), 'a', 'b'), "E_BAD_BODY MPUB body size does not match its 1 messages (1 bytes left)"},
		{append(mk(2, 1), 'a'), "E_BAD_MESSAGE MPUB failed to read message(1) body size"},
		{mk(1, 0), "E_BAD_MESSAGE MPUB invalid message(0) body size 0"},
		{mk(1, 0x80000000), "E_BAD_MESSAGE MPUB invalid message(0) body size -2147483648"},
		{mk(1, 11), "E_BAD_MESSAGE MPUB message too big 11 > 10"},
	}
	for _, c := range bad {
		_, perr := ParseMPUB(c.body, 10, 1000, nil)
		if perr == nil || perr.Error() != c.want || !perr.Fatal {
			t.Errorf("ParseMPUB(%x) = %v, want %q", c.body, perr, c.want)
		}
	}
}

func TestMessageCodec(t *testing.T) {
	id := NewMessageID(0x18a3c3ae11669000)
	if string(id[:]) != "18a3c3ae11669000" {
		t.Fatalf("id %s", id[:])
	}
	frame := AppendMessageFrame(nil, 0x18ea39cea5a5d44f, 1, &id, []byte("hello"))
	wantHex := "00000023" + "00000002" + "18ea39cea5a5d44f" + "0001" + "31386133633361653131363639303030" + "68656c6c6f"
	if got := hexs(frame); got != wantHex {
		t.Fatalf("frame %s\nwant  %s", got, wantHex)
	}
	ts, att, gotID, body, err := DecodeMessage(frame[8:])
	if err != nil || ts != 0x18ea39cea5a5d44f || att != 1 || gotID != id || string(body) != "hello" {
		t.Fatal(ts, att, gotID, body, err)
	}
	if _, _, _, _, err := DecodeMessage(make([]byte, 25)); err == nil {
		t.Fatal("short message decoded")
	}
}

func TestFrames(t *testing.T) {
	f := AppendFrame(nil, FrameTypeResponse, OK)
	if hexs(f) != "000000060000000"+"04f4b" {
		t.Fatalf("%s", hexs(f))
	}
	ft, data, err := ReadFrame(bytes.NewReader(f))
	if err != nil || ft != FrameTypeResponse || string(data) != "OK" {
		t.Fatal(ft, data, err)
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})); err == nil {
		t.Fatal("negative frame size accepted")
	}
	e := Fatalf(ErrInvalid, "invalid command %s", "FOO")
	if e.Error() != "E_INVALID invalid command FOO" || !e.Fatal {
		t.Fatal(e)
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
