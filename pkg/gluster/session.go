package gluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// Each `gluster` process spends most of its time before it talks to
// glusterd: at start-up the CLI runs `gsyncd --version` (a Python program)
// to decide whether to offer geo-replication commands. Measured on carve's
// 2-core test machine, that is 100–250 ms of every 120–350 ms call, while
// glusterd answers in 10–20 ms. A session keeps one interactive CLI
// (`gluster --mode=script --xml`, commands on stdin, one XML report per
// command on stdout) and feeds it the commands, so that start-up is paid
// once per burst of commands instead of once per command.

// sessionIdle is how long an idle session is kept before its process ends.
const sessionIdle = 15 * time.Second

// sessionMaxLine keeps command lines well inside the CLI's input buffer.
const sessionMaxLine = 900

// errSessionLost means the session could not answer the command (it died or
// printed something other than an XML report); the command is then run in
// a process of its own, which reports the failure properly.
var errSessionLost = errors.New("gluster CLI session lost")

// sessionCommand reports whether args (after "--mode=script --xml --") can
// go through a session: only the commands carve uses, whose every answer
// is one XML report, and only words the CLI's line splitting keeps intact.
func sessionCommand(args []string) ([]string, bool) {
	if len(args) < 5 || args[0] != "--mode=script" || args[1] != "--xml" || args[2] != "--" {
		return nil, false
	}
	words := args[3:]
	switch {
	case words[0] == "volume" && (words[1] == "info" || words[1] == "create" || words[1] == "set" || words[1] == "start" ||
		words[1] == "stop" || words[1] == "delete" || words[1] == "quota" || words[1] == "get"):
	case words[0] == "system::" && words[1] == "uuid":
	default:
		return nil, false
	}
	n := 0
	for _, w := range words {
		// A word starting with '-' would be an option only in argv, but
		// one-shot keeps the proven path for anything unusual.
		if w == "" || w[0] == '-' || strings.Trim(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@%+") != "" {
			return nil, false
		}
		n += len(w) + 1
	}
	return words, n <= sessionMaxLine
}

// session is one running interactive CLI.
type session struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	docs  chan []byte // one XML report each; closed when stdout ends
	texts chan string // stdout or stderr lines that are not part of a report
	dead  chan struct{}
}

func startSession(argv []string) (*session, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &session{cmd: cmd, stdin: stdin, docs: make(chan []byte, 1), texts: make(chan string, 16), dead: make(chan struct{})}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		defer close(s.docs)
		r := bufio.NewReader(stdout)
		var doc bytes.Buffer
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				t := strings.TrimSpace(line)
				switch {
				case doc.Len() == 0 && t == "":
				case doc.Len() == 0 && !strings.HasPrefix(t, "<"):
					s.text(t)
				default:
					doc.WriteString(line)
					if doc.Len() > maxOutput {
						s.text("report too large")
						doc.Reset()
					} else if strings.Contains(t, "</cliOutput>") {
						s.docs <- bytes.Clone(doc.Bytes())
						doc.Reset()
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			// The interactive CLI greets on stderr; that is not an answer.
			if t := strings.TrimSpace(sc.Text()); t != "" && !strings.HasPrefix(t, "Welcome to gluster prompt") {
				s.text(t)
			}
		}
	}()
	go func() {
		readers.Wait()
		_ = cmd.Wait()
		close(s.dead)
	}()
	return s, nil
}

func (s *session) text(t string) {
	select {
	case s.texts <- t:
	default: // only the first lines matter
	}
}

// sessionCheck is how often a waiting command checks that glusterd still
// listens: an interactive CLI whose glusterd went away retries to connect
// for ever instead of failing the command as a one-shot CLI does.
const sessionCheck = time.Second

// run sends one command line and waits for its report. alive reports
// whether glusterd still accepts connections.
func (s *session) run(ctx context.Context, words []string, alive func() bool) ([]byte, error) {
	// Drop what an earlier command left (there should be nothing).
	for drained := false; !drained; {
		select {
		case t := <-s.texts:
			return nil, fmt.Errorf("%w: unexpected output %q", errSessionLost, t)
		default:
			drained = true
		}
	}
	if _, err := io.WriteString(s.stdin, strings.Join(words, " ")+"\n"); err != nil {
		return nil, fmt.Errorf("%w: %w", errSessionLost, err)
	}
	tick := time.NewTicker(sessionCheck)
	defer tick.Stop()
	for {
		select {
		case doc, ok := <-s.docs:
			if !ok {
				return nil, fmt.Errorf("%w: the CLI exited", errSessionLost)
			}
			return doc, nil
		case t := <-s.texts:
			return nil, fmt.Errorf("%w: %q", errSessionLost, t)
		case <-tick.C:
			if !alive() {
				return nil, fmt.Errorf("%w: glusterd stopped listening", errSessionLost)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *session) close() {
	_ = s.stdin.Close() // the CLI exits at the end of its input
	select {
	case <-s.dead:
	case <-time.After(2 * time.Second):
		_ = s.cmd.Process.Kill()
	}
}

// sessions holds an executor's session; the zero value is ready.
type sessions struct {
	mu   sync.Mutex
	cur  *session
	idle *time.Timer
}

// run runs words through the session started by argv, starting one when
// needed. errSessionLost says the caller should run the command on its own.
// Without glusterd listening (alive) no session is used: the CLI's own
// "Connection failed" report comes from a one-shot run.
func (ss *sessions) run(ctx context.Context, argv, words []string, alive func() bool) ([]byte, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !alive() {
		if ss.cur != nil {
			_ = ss.cur.cmd.Process.Kill()
			go ss.cur.close()
			ss.cur = nil
		}
		return nil, fmt.Errorf("%w: glusterd is not listening", errSessionLost)
	}
	if ss.idle != nil {
		ss.idle.Stop()
	}
	if ss.cur != nil {
		select {
		case <-ss.cur.dead:
			ss.cur = nil
		default:
		}
	}
	if ss.cur == nil {
		s, err := startSession(argv)
		if err != nil {
			return nil, fmt.Errorf("%w: start: %w", errSessionLost, err)
		}
		klog.FromContext(ctx).V(4).Info("Started a gluster CLI session", "pid", s.cmd.Process.Pid)
		ss.cur = s
	}
	out, err := ss.cur.run(ctx, words, alive)
	if err != nil {
		// Its state is unknown now (a command may still be running).
		_ = ss.cur.cmd.Process.Kill()
		go ss.cur.close()
		ss.cur = nil
		return nil, err
	}
	cur := ss.cur
	ss.idle = time.AfterFunc(sessionIdle, func() {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.cur == cur {
			ss.cur = nil
			go cur.close()
		}
	})
	return out, nil
}

// close ends the session, if any.
func (ss *sessions) close() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.idle != nil {
		ss.idle.Stop()
	}
	if ss.cur != nil {
		ss.cur.close()
		ss.cur = nil
	}
}
