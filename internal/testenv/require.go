package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true, as .ci/run sets it).
// There every tool the tests use must be installed: a missing one fails
// the test instead of skipping it, so a green CI means it all ran.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// Require returns the path of the first of names found on PATH (names are
// alternatives: "chromium", "chromium-browser"). If none is, the test is
// skipped, or fails in CI. make deps (deploy/deps.sh) installs them all.
func Require(t testing.TB, names ...string) string {
	t.Helper()
	if p := lookPath(names); p != "" {
		return p
	}
	if InCI() {
		t.Fatalf("%s not installed, and CI must run every test (make deps installs it)", strings.Join(names, " or "))
	}
	t.Skipf("%s not installed (make deps installs it)", strings.Join(names, " or "))
	return ""
}

// Have is Require for a check that is one part of a test (sox reading a
// file the test made): it returns the tool's path, or "" after logging that
// the check is left out, so the rest of the test still runs. In CI a
// missing tool fails the test.
func Have(t testing.TB, names ...string) string {
	t.Helper()
	if p := lookPath(names); p != "" {
		return p
	}
	if InCI() {
		t.Fatalf("%s not installed, and CI must run every check (make deps installs it)", strings.Join(names, " or "))
	}
	t.Logf("%s not installed (make deps installs it): leaving its check out", strings.Join(names, " or "))
	return ""
}

func lookPath(names []string) string {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}
