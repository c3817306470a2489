package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestLookupReplyFraming(t *testing.T) {
	got := AppendLookupReply(nil, []byte("OK"))
	if want := []byte{0, 0, 0, 2, 'O', 'K'}; !bytes.Equal(got, want) {
		t.Fatalf("OK frame % x, want % x", got, want)
	}
	var buf bytes.Buffer
	if err := WriteLookupReply(&buf, []byte("E_INVALID client must IDENTIFY")); err != nil {
		t.Fatal(err)
	}
	buf.Write(AppendLookupReply(nil, nil))
	data, err := ReadLookupReply(&buf, 1024)
	if err != nil || string(data) != "E_INVALID client must IDENTIFY" || !IsLookupErrorReply(data) {
		t.Fatalf("read %q, %v", data, err)
	}
	data, err = ReadLookupReply(&buf, 1024)
	if err != nil || len(data) != 0 {
		t.Fatalf("empty reply: %q, %v", data, err)
	}
	if _, err := ReadLookupReply(&buf, 1024); err == nil {
		t.Fatal("read past end: no error")
	}
}

func TestReadLookupReplyBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"negative size", []byte{0xff, 0xff, 0xff, 0xff}},
		{"over max", []byte{0, 0, 0x10, 0}},
		{"short header", []byte{0, 0}},
		{"short body", []byte{0, 0, 0, 5, 'a'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ReadLookupReply(bytes.NewReader(tc.in), 100); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestLookupCommands(t *testing.T) {
	if got := string(AppendLookupCommand(nil, "REGISTER", "t", "c")); got != "REGISTER t c\n" {
		t.Fatalf("got %q", got)
	}
	if got := string(AppendLookupCommand(nil, "PING")); got != "PING\n" {
		t.Fatalf("got %q", got)
	}
	got := AppendLookupIdentify(nil, []byte("{}"))
	if want := []byte("IDENTIFY\n\x00\x00\x00\x02{}"); !bytes.Equal(got, want) {
		t.Fatalf("IDENTIFY % x", got)
	}
	for _, tc := range []struct {
		line   string
		name   string
		params []string
	}{
		{"PING", "PING", []string{}},
		{"  REGISTER t c \r", "REGISTER", []string{"t", "c"}},
		{"REGISTER  t", "REGISTER", []string{"", "t"}},
		{"", "", []string{}},
		{"UNREGISTER t c d", "UNREGISTER", []string{"t", "c", "d"}},
	} {
		name, params := ParseLookupCommand([]byte(tc.line))
		if name != tc.name || !reflect.DeepEqual(params, tc.params) {
			t.Errorf("ParseLookupCommand(%q) = %q %q, want %q %q", tc.line, name, params, tc.name, tc.params)
		}
	}
}

func TestLookupIdentifyJSON(t *testing.T) {
	li := LookupIdentify{BroadcastAddress: "10.0.0.5", Hostname: "node5", HTTPPort: 4151, TCPPort: 4150, Version: "1.3.0"}
	b, _ := json.Marshal(&li)
	want := `{"broadcast_address":"10.0.0.5","hostname":"node5","http_port":4151,"tcp_port":4150,"version":"1.3.0"}`
	if string(b) != want {
		t.Fatalf("IDENTIFY body %s\nwant %s", b, want)
	}
	if err := li.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []LookupIdentify{
		{HTTPPort: 1, TCPPort: 1, Version: "v"},
		{BroadcastAddress: "h", TCPPort: 1, Version: "v"},
		{BroadcastAddress: "h", HTTPPort: 1, Version: "v"},
		{BroadcastAddress: "h", HTTPPort: 1, TCPPort: 1},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	reply := LookupIdentifyReply{BroadcastAddress: "lookupd1", Hostname: "lookupd1", HTTPPort: 4161, TCPPort: 4160, Version: "1.3.0"}
	b, _ = json.Marshal(reply)
	want = `{"broadcast_address":"lookupd1","hostname":"lookupd1","http_port":4161,"tcp_port":4160,"version":"1.3.0"}`
	if string(b) != want {
		t.Fatalf("reply %s\nwant %s", b, want)
	}
}

func FuzzParseLookupCommand(f *testing.F) {
	f.Add([]byte("REGISTER t c"))
	f.Add([]byte(" \r\n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		name, params := ParseLookupCommand(line)
		joined := strings.Join(append([]string{name}, params...), " ")
		if joined != strings.TrimSpace(string(line)) {
			t.Fatalf("%q -> %q %q", line, name, params)
		}
	})
}

func FuzzReadLookupReply(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 'O', 'K'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xfe})
	f.Fuzz(func(t *testing.T, in []byte) {
		data, err := ReadLookupReply(bytes.NewReader(in), 1<<10)
		if err == nil && !bytes.Equal(AppendLookupReply(nil, data), in[:4+len(data)]) {
			t.Fatalf("round trip mismatch for % x", in)
		}
	})
}
