package nsqd

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// nsqd.dat as written is, byte for byte, what encoding/json makes of the
// metadata structures, for every kind of topic and channel; and it is what
// the file holds after the writer ran.
func TestMetadataEncodingEqualsEncodedSnapshot(t *testing.T) {
	n := startStatsNSQD(t)
	if got, want := n.appendMetadata(nil), mustMarshal(t, n.snapshotMetadata()); !bytes.Equal(got, want) {
		t.Fatalf("no topics:\nwritten %s\nencoded %s", got, want)
	}
	populateStats(t, n)
	statsPost(t, n, "/channel/create?topic=lonely&channel=only%23ephemeral")
	statsPost(t, n, "/channel/create?topic=jobs&channel=ttl&ttl=90s&max_attempts=0")
	got, want := n.appendMetadata(nil), mustMarshal(t, n.snapshotMetadata())
	if !bytes.Equal(got, want) {
		t.Fatalf("written %s\nencoded %s", got, want)
	}
	for _, key := range []string{`"durable":true`, `"retention_time":"2h0m0s"`, `"retention_bytes":1000000`, `"ttl":"1h0m0s"`,
		`"max_depth":500`, `"dead_letter_topic":"jobs-dead"`, `"max_attempts":0`, `"ttl":"1m30s"`, `"paused":true`, `"channels":null`} {
		if !bytes.Contains(got, []byte(key)) {
			t.Errorf("nsqd.dat lacks %s: %s", key, got)
		}
	}
	if bytes.Contains(got, []byte("ephemeral")) {
		t.Errorf("nsqd.dat lists an ephemeral topic or channel: %s", got)
	}
	if err := n.persistMetadata(); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(n.metadataPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, got) {
		t.Errorf("nsqd.dat holds %s", onDisk)
	}
	var md metadata
	if err := json.Unmarshal(onDisk, &md); err != nil || len(md.Topics) != 6 || md.Version != Version {
		t.Errorf("decoded %+v, %v", md, err)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
