package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestNetResolverLocalhost(t *testing.T) {
	ok, err := netResolver{timeout: 2 * time.Second}.Resolves(context.Background(), "localhost")
	if err != nil || !ok {
		t.Fatalf("Resolves(localhost) = %v, %v", ok, err)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"POD_NAME": "", "POD_NAMESPACE": "default"}, "POD_NAME"},
		{map[string]string{"POD_NAME": "mongo-0", "POD_NAMESPACE": "default", "INITIATE": "always"}, "auto or never"},
		{map[string]string{"POD_NAME": "mongo-0", "POD_NAMESPACE": "default", "PORT": "x"}, `PORT="x"`},
		{map[string]string{"POD_NAME": "mongo-0", "POD_NAMESPACE": "default", "INTERVAL": "10"}, `INTERVAL="10"`},
	} {
		envErrs = nil
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		err := run(nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("env %v: err %v, want it to mention %q", tc.env, err, tc.want)
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}
	envErrs = nil
}
