package realenv

import "testing"

func TestSkipOrFatalPolicy(t *testing.T) {
	t.Setenv(RequireRealEnv, "")
	if RequireReal() {
		t.Fatal("RequireReal with the variable empty")
	}
	t.Setenv(RequireRealEnv, "1")
	if !RequireReal() {
		t.Fatal("RequireReal with the variable set to 1")
	}
}
