package gluster

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".xml"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseVolumeInfo(t *testing.T) {
	out, err := Parse(readTestdata(t, "info-r3"))
	if err != nil {
		t.Fatal(err)
	}
	if out.OpRet != 0 || out.OpErrno != 0 || out.OpErrstr != "" || len(out.Volumes) != 1 {
		t.Fatalf("output = %+v", out)
	}
	v := out.Volumes[0]
	if v.Name != "capr3" || v.Status != StatusStarted || v.StatusStr != "Started" || v.ReplicaCount != 3 ||
		v.BrickCount != 3 || v.Type != "Replicate" || len(v.Bricks) != 3 {
		t.Errorf("volume = %+v", v)
	}
	b := v.Bricks[1]
	if b.Host != "vm" || !strings.HasSuffix(b.Path, "/capr3/brick1") || b.HostUUID == "" || b.Arbiter {
		t.Errorf("brick = %+v", b)
	}
	if val, ok := v.Option("performance.quick-read"); !ok || val != "off" {
		t.Errorf("option performance.quick-read = %q %v", val, ok)
	}
	if v.QuotaEnabled() {
		t.Error("quota reported enabled")
	}

	out, err = Parse(readTestdata(t, "info-single"))
	if err != nil {
		t.Fatal(err)
	}
	v = out.Volumes[0]
	if !v.QuotaEnabled() || v.Type != "Distribute" {
		t.Errorf("single: quota %v type %q", v.QuotaEnabled(), v.Type)
	}
	if val, _ := v.Option(OptPV); val != "pvc-123" {
		t.Errorf("user option = %q", val)
	}
	for _, name := range []string{"info-all", "info-created", "info-stopped"} {
		out, err := Parse(readTestdata(t, name))
		if err != nil || out.OpRet != 0 || len(out.Volumes) == 0 {
			t.Errorf("%s: %+v %v", name, out, err)
		}
	}
}

func TestParseQuotaList(t *testing.T) {
	out, err := Parse(readTestdata(t, "quota-list"))
	if err != nil {
		t.Fatal(err)
	}
	want := []QuotaLimit{
		{Path: "/a", HardLimit: 1 << 20, UsedSpace: 0, AvailSpace: 1 << 20},
		{Path: "/dir with space", HardLimit: 2 << 20, UsedSpace: 0, AvailSpace: 2 << 20},
	}
	if !reflect.DeepEqual(out.Limits, want) {
		t.Errorf("limits = %+v, want %+v", out.Limits, want)
	}
	out, err = Parse(readTestdata(t, "quota-list-path-nolimit"))
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Limits) != 1 || out.Limits[0].HardLimit != -1 || out.Limits[0].AvailSpace != -1 {
		t.Errorf("no-limit entry = %+v", out.Limits)
	}
}

func TestParseFailureReports(t *testing.T) {
	cases := map[string]struct {
		opRet  int
		errstr string
	}{
		"info-missing":            {-1, "Volume does not exist"},
		"quota-list-empty":        {-1, "No quota configured on volume capvol"},
		"quota-limit-disabled":    {-1, "Quota is disabled, please enable quota"},
		"quota-remove-again":      {-1, "No data available"},
		"quota-limit-missing-dir": {-2, "No such file or directory"},
		"create-noforce":          {-1, "Use 'force'"},
		"create-exists":           {-1, "already exists"},
		"delete-started":          {-1, "needs to be stopped"},
		"set-bad-option":          {-1, "does not exist"},
		"create-reuse-brick":      {0, "already part of a volume"}, // a warning on success
		"uuid-get":                {0, ""},
	}
	for name, tc := range cases {
		out, err := Parse(readTestdata(t, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if out.OpRet != tc.opRet || !strings.Contains(out.OpErrstr, tc.errstr) {
			t.Errorf("%s: opRet %d errstr %q, want %d containing %q", name, out.OpRet, out.OpErrstr, tc.opRet, tc.errstr)
		}
	}
	out, _ := Parse(readTestdata(t, "uuid-get"))
	if len(out.UUID) != 36 {
		t.Errorf("uuid = %q", out.UUID)
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	cases := map[string]string{
		"empty":          "",
		"not xml":        "Connection failed. Please check if gluster daemon is operational.",
		"wrong root":     `<foo><opRet>0</opRet><opErrno>0</opErrno></foo>`,
		"no opRet":       `<cliOutput><opErrno>0</opErrno></cliOutput>`,
		"two opRet":      `<cliOutput><opRet>-1</opRet><opRet>0</opRet><opErrno>0</opErrno></cliOutput>`,
		"text opRet":     `<cliOutput><opRet>ok</opRet><opErrno>0</opErrno></cliOutput>`,
		"no opErrno":     `<cliOutput><opRet>0</opRet></cliOutput>`,
		"trailing":       `<cliOutput><opRet>0</opRet><opErrno>0</opErrno></cliOutput><cliOutput/>`,
		"trailing text":  `<cliOutput><opRet>0</opRet><opErrno>0</opErrno></cliOutput> junk`,
		"truncated":      `<cliOutput><opRet>0</opRet><opErrno>0</opErrno><volInfo>`,
		"count mismatch": `<cliOutput><opRet>0</opRet><opErrno>0</opErrno><volInfo><volumes><volume><name>a</name><status>1</status></volume><count>2</count></volumes></volInfo></cliOutput>`,
		"volume no name": `<cliOutput><opRet>0</opRet><opErrno>0</opErrno><volInfo><volumes><volume><status>1</status></volume></volumes></volInfo></cliOutput>`,
		"bad brick":      `<cliOutput><opRet>0</opRet><opErrno>0</opErrno><volInfo><volumes><volume><name>a</name><status>1</status><bricks><brick><name>nocolon</name></brick></bricks></volume></volumes></volInfo></cliOutput>`,
		"bad limit":      `<cliOutput><opRet>0</opRet><opErrno>0</opErrno><volQuota><limit><path>/a</path><hard_limit>1MB</hard_limit><used_space>0</used_space><avail_space>0</avail_space></limit></volQuota></cliOutput>`,
		"relative limit": `<cliOutput><opRet>0</opRet><opErrno>0</opErrno><volQuota><limit><path>a</path><hard_limit>1</hard_limit><used_space>0</used_space><avail_space>0</avail_space></limit></volQuota></cliOutput>`,
	}
	for name, in := range cases {
		if out, err := Parse([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse = %+v, %v; want ErrMalformed", name, out, err)
		}
	}
}

// FuzzParse: Parse never panics, and what it accepts is self-consistent.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.xml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`<cliOutput><opRet>0</opRet><opErrno>0</opErrno></cliOutput>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for _, v := range out.Volumes {
			if v.Name == "" {
				t.Fatal("accepted a volume without a name")
			}
			for _, b := range v.Bricks {
				if b.Host == "" || !strings.HasPrefix(b.Path, "/") {
					t.Fatalf("accepted brick %+v", b)
				}
			}
		}
		for _, l := range out.Limits {
			if !strings.HasPrefix(l.Path, "/") || l.HardLimit < -1 {
				t.Fatalf("accepted limit %+v", l)
			}
		}
		again, err := Parse(data)
		if err != nil || !reflect.DeepEqual(out, again) {
			t.Fatalf("Parse is not deterministic: %v", err)
		}
	})
}
