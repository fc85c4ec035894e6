package gluster

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeCLI answers like `gluster --mode=script --xml`: with a command in argv
// once, without one line by line from stdin. Each start is logged.
const fakeCLI = `#!/bin/sh
echo "$*" >> "$FAKE_DIR/starts"
report() {
	printf '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<cliOutput>\n  <opRet>0</opRet>\n  <opErrno>0</opErrno>\n  <opErrstr/>\n  <output>%s</output>\n</cliOutput>\n' "$1"
}
if [ "$#" -gt 3 ]; then
	shift 4
	report "oneshot $*"
	exit 0
fi
echo "Welcome to gluster prompt, type 'help' to see the available commands." >&2
while IFS= read -r line; do
	case "$line" in
	"volume info die") exit 3 ;;
	"volume info text") echo "Connection failed. Please check if gluster daemon is operational." ;;
	"volume info stderr") echo "something went wrong" >&2 ;;
	*) report "session $line" ;;
	esac
done
`

func TestLocalExecutorSession(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("FAKE_DIR", dir)
	bin := filepath.Join(dir, "gluster")
	sock := filepath.Join(dir, "glusterd.socket")
	if err := os.WriteFile(bin, []byte(fakeCLI), 0o755); err != nil {
		t.Fatal(err)
	}
	// Sessions are used only while glusterd's socket accepts connections.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	e := &LocalExecutor{Command: bin, Socket: sock}
	defer e.Close()
	cli := NewCLI(e, nil)
	starts := func() int {
		data, _ := os.ReadFile(filepath.Join(dir, "starts"))
		return strings.Count(string(data), "\n")
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := cli.Run(t.Context(), args...)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		return out.Message
	}
	for _, v := range []string{"a", "b", "c"} {
		if got := run("volume", "info", v); got != "session volume info "+v {
			t.Errorf("volume info %s = %q", v, got)
		}
	}
	if n := starts(); n != 1 {
		t.Errorf("%d CLI processes for three commands, want one session", n)
	}
	// Words the CLI's line splitting would change, and commands outside
	// carve's list, run on their own.
	for _, args := range [][]string{{"volume", "quota", "v", "limit-usage", "/a b", "1"}, {"volume", "info", "--version"}, {"peer", "status", "x"}} {
		if got := run(args...); got != "oneshot "+strings.Join(args, " ") {
			t.Errorf("%q = %q, want it run on its own", args, got)
		}
	}
	// A session that dies, prints text, or complains on stderr is replaced
	// and the command runs on its own.
	for _, v := range []string{"die", "text", "stderr"} {
		if got := run("volume", "info", v); got != "oneshot volume info "+v {
			t.Errorf("volume info %s = %q, want it run on its own", v, got)
		}
		if got := run("volume", "info", "x"); got != "session volume info x" {
			t.Errorf("after %s: %q, want a new session", v, got)
		}
	}
	if n := starts(); n != 1+3+3*2 {
		t.Errorf("%d CLI processes, want %d", n, 1+3+3*2)
	}
	// glusterd gone, its socket file left: no session, so the CLI's own
	// report of the failure.
	ln.Close()
	if err := os.WriteFile(sock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := run("volume", "info", "a"); got != "oneshot volume info a" {
		t.Errorf("without glusterd listening: %q", got)
	}
	e.OneShot = true
	if got := run("volume", "info", "a"); got != "oneshot volume info a" {
		t.Errorf("OneShot: %q", got)
	}
}
