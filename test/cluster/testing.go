package cluster

import (
	"errors"
	"os"
	"testing"
)

// StartForTest starts a cluster for t and stops it in t.Cleanup, keeping the
// logs (and printing where) if t failed. It skips t when not running as root
// or when the binaries can be neither found nor built; set
// CARVE_REQUIRE_REAL=1 (CI, as for the other real-server fixtures) to fail
// instead of skipping.
func StartForTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "cluster: e2e tests need root; rerun as root")
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	c, err := Start(t.Context(), opts)
	if errors.Is(err, ErrNoBinaries) {
		skipOrFail(t, err.Error()+" (run bash hack/build-tools.sh or set CARVE_TOOLS_BIN)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.MarkFailed()
		}
		c.Stop()
	})
	return c
}

func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
