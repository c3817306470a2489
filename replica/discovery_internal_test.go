package replica

import (
	"fmt"
	"testing"
)

func TestParseNodes(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       string // fmt of the nodes, or "error"
	}{
		{"v1", `{"producers":[{"broadcast_address":"10.0.0.5","tcp_port":4150,"http_port":4151,"topics":["a"],"tombstones":[false]}]}`, "[10.0.0.5:4150]"},
		{"legacy wrapper", `{"status_code":200,"status_txt":"OK","data":{"producers":[{"broadcast_address":"h","tcp_port":1}]}}`, "[h:1]"},
		{"legacy error", `{"status_code":500,"status_txt":"INTERNAL_ERROR","data":null}`, "error"},
		{"ipv6", `{"producers":[{"broadcast_address":"::1","tcp_port":4150}]}`, "[[::1]:4150]"},
		{"no nodes", `{"producers":[]}`, "[]"},
		{"null producers", `{"producers":null}`, "[]"},
		{"unusable entries skipped", `{"producers":[{"broadcast_address":"","tcp_port":1},{"broadcast_address":"h","tcp_port":0},{"broadcast_address":"h","tcp_port":65536},{"broadcast_address":"h","tcp_port":2}]}`, "[h:2]"},
		{"not json", `<html>`, "error"},
		{"wrong type", `{"producers":[{"broadcast_address":"h","tcp_port":"4150"}]}`, "error"},
	} {
		nodes, err := parseNodes([]byte(tc.body), "lookupd:4161")
		got := fmt.Sprint(nodes)
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("%s: got %s (%v), want %s", tc.name, got, err, tc.want)
		}
	}
}
