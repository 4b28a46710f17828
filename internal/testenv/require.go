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
	return find(t, names, "test", t.Skipf, "")
}

// Have is Require for a check that is one part of a test (sox reading a
// file the test made): it returns the tool's path, or "" after logging that
// the check is left out, so the rest of the test still runs. In CI a
// missing tool fails the test.
func Have(t testing.TB, names ...string) string {
	t.Helper()
	return find(t, names, "check", t.Logf, ": leaving its check out")
}

// find looks names up on PATH; a missing tool fails the test in CI, and
// elsewhere is reported with orElse (Skipf or Logf).
func find(t testing.TB, names []string, what string, orElse func(string, ...any), note string) string {
	t.Helper()
	if p := lookPath(names); p != "" {
		return p
	}
	list := strings.Join(names, " or ")
	if InCI() {
		t.Fatalf("%s not installed, and CI must run every %s (make deps installs it)", list, what)
	}
	orElse("%s not installed (make deps installs it)%s", list, note)
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
