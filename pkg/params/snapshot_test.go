package params

import (
	"errors"
	"strings"
	"testing"
)

func TestRestoreAcrossNamespaces(t *testing.T) {
	base := map[string]string{"backend": "nfs", "server": "s", "share": "/e"}
	for _, tc := range []struct {
		name, value string
		src, claim  string
		allowed     bool
	}{
		{"default, same namespace", "", "a", "a", true},
		{"default, other namespace", "", "a", "b", false},
		{"default, unknown source into a named claim", "", "", "b", false},
		{"false", "false", "a", "b", false},
		{"true", "true", "a", "b", true},
		{"True (case)", "True", "a", "b", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := map[string]string{}
			for k, v := range base {
				p[k] = v
			}
			if tc.value != "" {
				p["RestoreAcrossNamespaces"] = tc.value // keys match case-insensitively
			}
			cfg, err := Parse(p)
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.CheckDataSource(tc.src, tc.claim)
			if (err == nil) != tc.allowed {
				t.Errorf("CheckDataSource(%q, %q) = %v, allowed %v", tc.src, tc.claim, err, tc.allowed)
			}
			if err != nil && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), RestoreAcrossNamespaces)) {
				t.Errorf("refusal %v: not ErrInvalid or does not name %s", err, RestoreAcrossNamespaces)
			}
		})
	}
	p := map[string]string{"backend": "nfs", "server": "s", "share": "/e", RestoreAcrossNamespaces: "maybe"}
	if _, err := Parse(p); !errors.Is(err, ErrInvalid) {
		t.Errorf("restoreAcrossNamespaces=maybe: %v", err)
	}
}

func TestCheckSnapshotEntry(t *testing.T) {
	for _, ok := range []string{"snapshot-1a2b", "h-0123", "a.b_c", strings.Repeat("a", MaxSnapshotEntry)} {
		if err := CheckSnapshotEntry(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".new-1", "..", "a/b", "-o", strings.Repeat("a", MaxSnapshotEntry+1), "a b", "é"} {
		if err := CheckSnapshotEntry(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
