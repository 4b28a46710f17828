package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// SIPp is one running SIPp process: a real SIP peer (trunk or phone).
type SIPp struct {
	t        testing.TB
	name     string
	cmd      *exec.Cmd
	out      bytes.Buffer
	done     chan error
	Messages string // -message_file: every message sent and received
	Log      string // -log_file: the scenario's <log> lines
	Errors   string // -error_file
}

// SIPpOptions describe a SIPp run.
type SIPpOptions struct {
	Scenario string            // file name under testdata/sipp
	Remote   string            // host:port to send to (may be empty for a UAS)
	LocalIP  string            // -i
	Port     int               // -p (0: any)
	Keys     map[string]string // -key k v
	Sets     map[string]string // -set k v
	Args     []string          // anything else
	Timeout  time.Duration     // -timeout; default 30s
}

// StartSIPp starts SIPp in the background; Wait collects its result. The
// process is killed when the test ends.
func StartSIPp(t testing.TB, name string, o SIPpOptions) *SIPp {
	t.Helper()
	Require(t, "sipp") // Debian's sip-tester
	dir := t.TempDir()
	s := &SIPp{t: t, name: name, done: make(chan error, 1),
		Messages: filepath.Join(dir, "messages.log"), Log: filepath.Join(dir, "scenario.log"), Errors: filepath.Join(dir, "errors.log")}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	args := []string{
		"-sf", filepath.Join(Root(), "testdata", "sipp", o.Scenario),
		"-m", "1", "-nostdin", "-timeout", fmt.Sprintf("%ds", int(o.Timeout/time.Second)), "-timeout_error",
		"-trace_msg", "-message_file", s.Messages,
		"-trace_logs", "-log_file", s.Log,
		"-trace_err", "-error_file", s.Errors,
		"-max_retrans", "5",
	}
	if o.LocalIP != "" {
		args = append(args, "-i", o.LocalIP)
	}
	if o.Port != 0 {
		args = append(args, "-p", fmt.Sprint(o.Port))
	}
	for k, v := range o.Keys {
		args = append(args, "-key", k, v)
	}
	for k, v := range o.Sets {
		args = append(args, "-set", k, v)
	}
	args = append(args, o.Args...)
	if o.Remote != "" {
		args = append(args, o.Remote)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout+20*time.Second)
	s.cmd = exec.CommandContext(ctx, "sipp", args...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("sipp %s: %v", name, err)
	}
	go func() { s.done <- s.cmd.Wait(); cancel() }()
	t.Cleanup(func() { _ = s.cmd.Process.Kill() })
	return s
}

// Wait waits for SIPp to finish and fails the test unless its call
// succeeded (exit 0).
func (s *SIPp) Wait() {
	s.t.Helper()
	if err := s.Result(); err != nil {
		s.t.Fatal(err)
	}
}

// Result waits for SIPp to finish and describes a failure.
func (s *SIPp) Result() error {
	err := <-s.done
	s.done <- err // later calls see the same result
	if err == nil {
		return nil
	}
	trace, _ := os.ReadFile(s.Errors)
	msgs, _ := os.ReadFile(s.Messages)
	return fmt.Errorf("sipp %s: %v\n--- errors:\n%s\n--- messages (tail):\n%s", s.name, err, tailOf(trace, 3000), tailOf(msgs, 4000))
}

// Kill stops SIPp (for a phone that is expected never to ring).
func (s *SIPp) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
	s.done <- nil
}

// Received returns the messages SIPp received, each whole.
func (s *SIPp) Received() []string {
	raw, _ := os.ReadFile(s.Messages)
	var out []string
	for _, block := range strings.Split(string(raw), "-----------------------------------------------") {
		if i := strings.Index(block, "message received"); i >= 0 {
			if j := strings.Index(block[i:], "\n"); j > 0 {
				out = append(out, strings.TrimSpace(block[i+j:]))
			}
		}
	}
	return out
}

// LogValue waits up to d for a "<key> <value>" line in the scenario log;
// it gives up at once if SIPp ends without having logged it.
func (s *SIPp) LogValue(key string, d time.Duration) (string, error) {
	re := regexp.MustCompile(regexp.QuoteMeta(key) + ` (.*)`)
	var value string
	logged := func() bool {
		raw, _ := os.ReadFile(s.Log)
		m := re.FindSubmatch(raw)
		if m != nil {
			value = strings.TrimSpace(string(m[1]))
		}
		return m != nil
	}
	var ended error
	if !WaitFor(d, func() bool {
		if logged() {
			return true
		}
		select {
		case err := <-s.done:
			s.done <- err
			if !logged() { // the log is complete now
				ended = fmt.Errorf("sipp %s ended (%v) before logging %q: %w", s.name, err, key, s.Result())
			}
			return true
		default:
			return false
		}
	}) {
		return "", fmt.Errorf("sipp %s: no %q in its log", s.name, key)
	}
	return value, ended
}

func tailOf(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
