package testenv

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A file the test binary inherited (as flock's lock is) does not reach the
// processes a test starts once keepInheritedFiles ran.
func TestInheritedFilesNotPassedOn(t *testing.T) {
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0) // no O_CLOEXEC: as inherited
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	childFDs := func() []string {
		out, err := exec.Command("sh", "-c", "ls /proc/$$/fd").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(out))
	}
	has := func(fds []string) bool {
		for _, f := range fds {
			if f == strconv.Itoa(fd) {
				return true
			}
		}
		return false
	}
	if !has(childFDs()) {
		t.Skipf("fd %d did not reach the child even before: nothing to prove here", fd)
	}
	keepInheritedFiles()
	if fds := childFDs(); has(fds) {
		t.Fatalf("fd %d reached the child after keepInheritedFiles: %v", fd, fds)
	}
}
