package bus

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A port in use is an error naming the address at once, not a silent
// 15-second wait for a server that never listens.
func TestStartEmbeddedPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	start := time.Now()
	e, err := StartEmbedded(t.TempDir(), "127.0.0.1", port, NewUsers())
	if err == nil {
		e.Shutdown()
		t.Fatal("embedded NATS started on a port in use")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("refusing took %v", took)
	}
	if addr := "127.0.0.1:" + strconv.Itoa(port); !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name %s", err, addr)
	}
}

// Generated passwords read as strings in a nats-server configuration
// (deploy/nats/accounts.conf takes them from the environment): they never
// start with a digit.
func TestPasswordsStartWithALetter(t *testing.T) {
	for range 1000 {
		if p := newPassword(); p[0] < 'a' || p[0] > 'z' {
			t.Fatalf("password %q… starts with %q", p[:4], p[0])
		}
	}
}
