package params

import (
	"errors"
	"strings"
	"testing"
)

func TestParseLayout(t *testing.T) {
	c, err := Parse(nfsParams())
	if err != nil || c.Layout != LayoutDirectory {
		t.Fatalf("default layout: %v %v, want directory", c, err)
	}
	for _, v := range []string{"btrfs", "BTRFS", "Btrfs"} {
		c, err := Parse(nfsParams("layout", v))
		if err != nil || c.Layout != LayoutBtrfs {
			t.Errorf("layout %q: %+v %v", v, c, err)
		}
	}
	if c, err := Parse(nfsParams("Layout", "directory")); err != nil || c.Layout != LayoutDirectory {
		t.Errorf("layout directory: %v", err)
	}
	for _, tc := range []struct {
		in   map[string]string
		want string
	}{
		{nfsParams("layout", "zfs"), `layout="zfs": must be directory or btrfs`},
		{nfsParams("layout", ""), `layout="": must be directory or btrfs`},
		{map[string]string{"backend": "gluster", "glusterServers": "g1", "glusterVolume": "v", "layout": "btrfs"},
			`layout="btrfs" applies to backend nfs only`},
	} {
		_, err := Parse(tc.in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%v): %v, want %q", tc.in, err, tc.want)
		}
	}
}
