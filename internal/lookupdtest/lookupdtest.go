// Package lookupdtest starts an in-process nsqlookupd for tests of other
// packages. (It is not in testutil: lookupd's own tests use testutil, so
// testutil cannot import lookupd.)
package lookupdtest

import (
	"testing"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
)

// Start starts an nsqlookupd on 127.0.0.1 ephemeral ports (after mod, which
// may be nil, changes its options) and exits it when the test ends.
func Start(t testing.TB, mod func(*lookupd.Options)) *lookupd.Daemon {
	t.Helper()
	opts := lookupd.NewOptions()
	opts.TCPAddress, opts.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0"
	opts.BroadcastAddress = "127.0.0.1"
	opts.Logger = testutil.TestLogger()
	if mod != nil {
		mod(opts)
	}
	d, err := lookupd.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Exit)
	return d
}
