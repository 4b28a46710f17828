package logging

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A console log written to a file (make run > log, a service's journal)
// holds no ANSI escape codes; the level is still written.
func TestConsoleLogToFileHasNoColour(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serve.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stderr := os.Stderr
	os.Stderr = f // zap resolves "stderr" when the logger is built
	defer func() { os.Stderr = stderr }()
	for _, format := range []string{"console", "json"} {
		log, err := New(format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("maskpbx is up")
		log.Warn("call recording is off")
		_ = log.Sync()
	}
	os.Stderr = stderr
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := string(raw)
	if strings.Contains(out, "\x1b[") {
		t.Fatalf("log file holds escape codes:\n%q", out)
	}
	if !strings.Contains(out, "\tINFO\t") || !strings.Contains(out, "\tWARN\t") || !strings.Contains(out, `"level":"info"`) {
		t.Fatalf("log file lacks the levels:\n%s", out)
	}
}

func TestColourOnlyOnTerminals(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for name, file := range map[string]*os.File{"file": f, "pipe": w, "/dev/null": null} {
		if colourful(file) {
			t.Errorf("%s gets colour", name)
		}
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		defer tty.Close()
		if !colourful(tty) {
			t.Error("a terminal gets no colour")
		}
		t.Setenv("NO_COLOR", "1")
		if colourful(tty) {
			t.Error("NO_COLOR is ignored")
		}
	}
}
