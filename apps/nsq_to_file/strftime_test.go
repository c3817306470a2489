package main

import (
	"testing"
	"time"
)

func TestStrftime(t *testing.T) {
	ts := time.Date(2026, time.March, 5, 14, 7, 9, 0, time.UTC)
	for _, tc := range []struct{ in, want string }{
		{"%Y-%m-%d_%H", "2026-03-05_14"},
		{"%y%j %I%p %M:%S", "26064 02PM 07:09"},
		{"%a %A %b %B %e", "Thu Thursday Mar March  5"},
		{"%F %T %Z %z", "2026-03-05 14:07:09 UTC +0000"},
		{"%s", "1772719629"},
		{"100%% %q end%", "100% %q end%"},
	} {
		if got := strftime(tc.in, ts); got != tc.want {
			t.Errorf("strftime(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
