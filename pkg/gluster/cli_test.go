package gluster

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
)

// response is one canned CLI answer.
type response struct {
	stdout []byte
	err    error
}

// fakeExec answers with canned responses in order (the last one repeats)
// and records the arguments it got.
type fakeExec struct {
	mu        sync.Mutex
	responses []response
	calls     [][]string
}

func (f *fakeExec) Run(_ context.Context, args []string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, args)
	r := f.responses[0]
	if len(f.responses) > 1 {
		f.responses = f.responses[1:]
	}
	return r.stdout, r.err
}

// replay loads a captured answer: testdata/NAME.xml is stdout, NAME.meta the
// exit code and stderr.
func replay(t *testing.T, name string) response {
	t.Helper()
	stdout := readTestdata(t, name)
	meta, err := os.ReadFile(filepath.Join("testdata", name+".meta"))
	if err != nil {
		t.Fatal(err)
	}
	_, exitLine, _ := strings.Cut(string(meta), "\nexit: ")
	exitLine, stderr, _ := strings.Cut(exitLine, "\nstderr: ")
	code, err := strconv.Atoi(strings.TrimSpace(exitLine))
	if err != nil {
		t.Fatalf("%s.meta: exit %q", name, exitLine)
	}
	r := response{stdout: stdout}
	if code != 0 {
		r.err = &RunError{Command: "gluster", ExitCode: code, Stderr: strings.TrimSpace(stderr)}
	}
	return r
}

func newFakeCLI(responses ...response) (*CLI, *fakeExec) {
	f := &fakeExec{responses: responses}
	c := NewCLI(f, nil)
	c.BusyBackoff = time.Millisecond
	return c, f
}

func TestCLIClassifiesCapturedOutputs(t *testing.T) {
	cases := []struct {
		file string
		want error // nil: success
		msg  string
	}{
		{"info-single", nil, ""},
		{"create-reuse-brick", nil, ""}, // opRet 0 with a warning in opErrstr
		{"info-missing", backend.ErrNotFound, "Volume does not exist"},
		{"quota-list-missing-vol", backend.ErrNotFound, "nosuchvol does not exist"},
		{"delete-missing", backend.ErrNotFound, "capnew does not exist"},
		{"glusterd-down-info", backend.ErrUnavailable, "glusterd is not answering"},
		{"glusterd-down-quota", backend.ErrUnavailable, "Connection failed"},
		{"quota-limit-disabled", ErrCommand, "Quota is disabled"},
		{"set-bad-option", ErrCommand, "no.such.option does not exist"},
		{"create-noforce", ErrCommand, "'force'"},
		{"quota-list-disabled", ErrCommand, "Quota is disabled"}, // exit 2 with an XML report
		{"create-bad-name", ErrCommand, "should not contain"},    // usage error: no XML
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			c, _ := newFakeCLI(replay(t, tc.file))
			out, err := c.Run(t.Context(), "volume", "x")
			if tc.want == nil {
				if err != nil || out == nil {
					t.Fatalf("Run = %v, %v; want success", out, err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Run error = %v; want %v mentioning %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestCLINeverAssumesSuccess(t *testing.T) {
	c, _ := newFakeCLI(response{stdout: []byte("Volume set successful\n")})
	if _, err := c.Run(t.Context(), "volume", "set", "v", "k", "v"); !errors.Is(err, ErrCommand) || !errors.Is(err, ErrMalformed) {
		t.Fatalf("exit 0 without XML: %v", err)
	}
	c, _ = newFakeCLI(response{err: &RunError{Command: "ssh", ExitCode: 255, Unreachable: true, Stderr: "Connection refused"}})
	if _, err := c.Run(t.Context(), "volume", "info"); !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "Connection refused") {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestCLIRetriesBusy(t *testing.T) {
	busy := response{stdout: []byte(`<cliOutput><opRet>-1</opRet><opErrno>30800</opErrno><opErrstr>Another transaction is in progress for gv0. Please try again after some time.</opErrstr></cliOutput>`)}
	ok := response{stdout: []byte(`<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/></cliOutput>`)}
	c, f := newFakeCLI(busy, busy, ok)
	if _, err := c.Run(t.Context(), "volume", "set", "gv0", "a", "b"); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(f.calls) != 3 || strings.Join(f.calls[0], " ") != "--mode=script --xml -- volume set gv0 a b" {
		t.Errorf("calls = %q", f.calls)
	}
	c, _ = newFakeCLI(busy)
	c.BusyRetries = 2
	if _, err := c.Run(t.Context(), "volume", "set", "gv0", "a", "b"); !errors.Is(err, backend.ErrBusy) {
		t.Fatalf("busy forever: %v", err)
	}
}

func TestCLIHelpers(t *testing.T) {
	c, _ := newFakeCLI(replay(t, "quota-list-empty"))
	if l, err := c.QuotaList(t.Context(), "capvol"); err != nil || len(l) != 0 {
		t.Errorf("empty quota list = %v, %v", l, err)
	}
	c, _ = newFakeCLI(replay(t, "info-missing"))
	if _, err := c.VolumeInfo(t.Context(), "nosuchvol"); !errors.Is(err, backend.ErrNotFound) || !strings.Contains(err.Error(), `"nosuchvol" does not exist`) {
		t.Errorf("VolumeInfo missing: %v", err)
	}
	c, _ = newFakeCLI(replay(t, "uuid-get"))
	if u, err := c.LocalUUID(t.Context()); err != nil || len(u) != 36 {
		t.Errorf("LocalUUID = %q, %v", u, err)
	}
}

func TestRemoveLimitIgnoresMissingLimit(t *testing.T) {
	for _, file := range []string{"quota-remove", "quota-remove-again", "quota-remove-missing-dir"} {
		f := &fakeExec{responses: []response{replay(t, "info-single"), replay(t, file)}}
		b := New(Options{NewExecutor: func(context.Context, []string, ExecutorSpec) (Executor, error) { return f, nil }})
		id := volid.ID{Backend: "gluster", Servers: []string{"vm"}, Share: "capvol", Dir: []string{"a"}, OnDelete: "delete"}
		if err := b.RemoveLimit(t.Context(), id); err != nil {
			t.Errorf("%s: RemoveLimit = %v", file, err)
		}
	}
}

func TestApplyLimitPolicies(t *testing.T) {
	id := volid.ID{Backend: "gluster", Servers: []string{"vm"}, Share: "capr3", Dir: []string{"ns", "c"}, OnDelete: "delete"}
	cfg := func(quota string) *params.Config {
		c, err := params.Parse(map[string]string{"backend": "gluster", "servers": "vm", "volume": "capr3", "quota": quota})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	newB := func(r ...response) (*Backend, *fakeExec) {
		f := &fakeExec{responses: r}
		return New(Options{NewExecutor: func(context.Context, []string, ExecutorSpec) (Executor, error) { return f, nil }}), f
	}
	// capr3 has no quota: auto warns once, gluster fails, none warns without asking glusterd.
	b, _ := newB(replay(t, "info-r3"))
	w, err := b.ApplyLimit(t.Context(), id, cfg("auto"), 1<<30)
	if err != nil || len(w) != 1 || !strings.Contains(w[0], "1Gi") || !strings.Contains(w[0], "quota is not enabled") {
		t.Errorf("auto without quota: %q, %v", w, err)
	}
	b, _ = newB(replay(t, "info-r3"))
	if _, err := b.ApplyLimit(t.Context(), id, cfg("gluster"), 1<<30); !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), "gluster volume quota capr3 enable") {
		t.Errorf("gluster without quota: %v", err)
	}
	b, f := newB(replay(t, "info-r3"))
	if w, err := b.ApplyLimit(t.Context(), id, cfg("none"), 1<<30); err != nil || len(w) != 1 || len(f.calls) != 0 {
		t.Errorf("none: %q %v, calls %q", w, err, f.calls)
	}
	// capvol has quota and deem-statfs on: one limit-usage call, in bytes.
	b, f = newB(replay(t, "info-single"), replay(t, "quota-limit"))
	id.Share = "capvol"
	if w, err := b.ApplyLimit(t.Context(), id, cfg("auto"), 5<<20); err != nil || len(w) != 0 {
		t.Fatalf("auto with quota: %q, %v", w, err)
	}
	if got := strings.Join(f.calls[1], " "); got != "--mode=script --xml -- volume quota capvol limit-usage /ns/c 5242880" {
		t.Errorf("limit call = %q", got)
	}
}

func TestMountSpec(t *testing.T) {
	b := New(Options{})
	id := volid.ID{Backend: "gluster", Servers: []string{"g1", "g2", "[fd00::3]"}, Share: "gv0", Dir: []string{"ns", "data"}, OnDelete: "retain"}
	ms := b.MountSpec(id, []string{"log-level=WARNING"})
	if ms.Source != "g1:/gv0/ns/data" || ms.FSType != "glusterfs" ||
		strings.Join(ms.Options, ",") != "backup-volfile-servers=g2:[fd00::3],auto_unmount,log-level=WARNING" {
		t.Errorf("MountSpec = %+v", ms)
	}
	id.Dir, id.Servers = nil, []string{"g1"}
	ms = b.MountSpec(id, []string{"auto_unmount", "ro"})
	if ms.Source != "g1:/gv0" || strings.Join(ms.Options, ",") != "auto_unmount,ro" {
		t.Errorf("MountSpec of a whole volume = %+v", ms)
	}
}

func TestVolumeName(t *testing.T) {
	uid := "5f1c2a9e-0b3d-4e7f-9a1b-2c3d4e5f6a7b"
	if got := VolumeName("pvc", "db", "data-mongo-0", uid, "pvc-"+uid); got != "pvc_db_data-mongo-0_5f1c2a9e" {
		t.Errorf("VolumeName = %q", got)
	}
	long := VolumeName("carve", strings.Repeat("n", 63), "claim."+strings.Repeat("x", 240), uid, "pv")
	if len(long) > maxVolumeName || !strings.HasSuffix(long, "_5f1c2a9e") || params.CheckGlusterVolumeName(long) != nil {
		t.Errorf("long VolumeName = %q (%d)", long, len(long))
	}
	if got := VolumeName("pvc", "db", "data", "", "pvc-"+uid); got != "pvc_db_data_5f1c2a9e" {
		t.Errorf("VolumeName from the PV name = %q", got)
	}
	a, b := VolumeName("p", "ns", "c", "", "pvc-a"), VolumeName("p", "ns", "c", "", "pvc-b")
	if a == b || params.CheckGlusterVolumeName(a) != nil {
		t.Errorf("names without UID: %q %q", a, b)
	}
	if err := (volid.ID{Backend: "gluster", Servers: []string{"h"}, Share: long, OnDelete: "delete"}).Validate(); err != nil {
		t.Errorf("generated name is not a valid volume ID share: %v", err)
	}
}

func TestCheckBrickPath(t *testing.T) {
	for p, ok := range map[string]bool{
		"/bricks/vol": true, "/a/b/vol": true, "/vol": false, "/bricks/other": false,
		"bricks/vol": false, "/bricks/../vol": false, "/bricks/vol/": false,
	} {
		if err := checkBrickPath(p, "vol"); (err == nil) != ok {
			t.Errorf("checkBrickPath(%q) = %v", p, err)
		}
	}
}

// TestQuotaStateCache: a volume seen with quota enabled is not asked again
// for the next claims; quota switched off since is noticed on the limit
// call, asked again, and the policy applied to what glusterd says now.
func TestQuotaStateCache(t *testing.T) {
	id := volid.ID{Backend: "gluster", Servers: []string{"vm"}, Share: "capvol", Dir: []string{"ns", "c"}, OnDelete: "delete"}
	cfg, err := params.Parse(map[string]string{"backend": "gluster", "servers": "vm", "volume": "capvol"})
	if err != nil {
		t.Fatal(err)
	}
	noQuota := replay(t, "info-r3") // capr3 has no quota; call it capvol
	noQuota.stdout = bytes.ReplaceAll(noQuota.stdout, []byte("capr3"), []byte("capvol"))
	f := &fakeExec{responses: []response{replay(t, "info-single"), replay(t, "quota-limit"), replay(t, "quota-limit"),
		replay(t, "quota-limit-disabled"), noQuota}}
	now := time.Unix(1000, 0)
	b := New(Options{NewExecutor: func(context.Context, []string, ExecutorSpec) (Executor, error) { return f, nil },
		Now: func() time.Time { return now }})
	words := func() []string {
		var w []string
		for _, c := range f.calls {
			if c[4] == "quota" {
				w = append(w, "quota "+c[6])
			} else {
				w = append(w, c[4])
			}
		}
		f.calls = nil
		return w
	}
	for range 2 {
		if w, err := b.ApplyLimit(t.Context(), id, cfg, 5<<20); err != nil || len(w) != 0 {
			t.Fatalf("ApplyLimit: %q, %v", w, err)
		}
	}
	if got := strings.Join(words(), ","); got != "info,quota limit-usage,quota limit-usage" {
		t.Errorf("calls for two claims = %q, want one volume info", got)
	}
	// Quota switched off: the refused limit leads to a fresh look, then the warning.
	w, err := b.ApplyLimit(t.Context(), id, cfg, 5<<20)
	if err != nil || len(w) != 1 || !strings.Contains(w[0], "quota is not enabled") {
		t.Errorf("after quota was switched off: %q, %v", w, err)
	}
	if got := strings.Join(words(), ","); got != "quota limit-usage,info" {
		t.Errorf("calls after quota was switched off = %q", got)
	}
}
