// Package testenv gives tests real infrastructure: a throwaway Postgres
// cluster (one per test binary, a fresh database per test) and an embedded
// NATS server with JetStream. Nothing here is a mock.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maskpbx/maskpbx/internal/bus"
)

var (
	pgOnce sync.Once
	pgDir  string
	pgURL  string
	pgErr  error
)

// Main runs a package's tests and then stops the Postgres cluster if one was
// started. Use it from TestMain: os.Exit(testenv.Main(m)).
func Main(m *testing.M) int {
	keepInheritedFiles()
	code := m.Run()
	if pgDir != "" {
		_ = exec.Command(pgScript(), "stop", pgDir).Run()
		_ = os.RemoveAll(filepath.Dir(pgDir))
	}
	return code
}

// keepInheritedFiles marks the files the test binary inherited beyond
// stdin, stdout and stderr close-on-exec, so that the servers a test starts
// don't hold them. A lock taken around `go test` (flock) is such a file: a
// Postgres left behind by a test binary that was killed would hold it, and
// every later run waiting for the lock would wait forever.
func keepInheritedFiles() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return // not Linux: nothing to do
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// Root is the module's root directory.
func Root() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

func pgScript() string { return filepath.Join(Root(), "deploy", "pg.sh") }

// FreePort returns a TCP port on host that was free a moment ago.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startCluster() {
	if url := os.Getenv("MASKPBX_TEST_DATABASE_URL"); url != "" {
		pgURL = url
		return
	}
	base, err := os.MkdirTemp("", "maskpbx-pg-")
	if err != nil {
		pgErr = err
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pgErr = err
		return
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	pgDir = filepath.Join(base, "data")
	cmd := exec.Command(pgScript(), "start", pgDir, fmt.Sprint(port))
	cmd.Env = append(os.Environ(), "PG_FSYNC=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		pgErr = fmt.Errorf("start postgres: %v: %s", err, out)
		return
	}
	pgURL = fmt.Sprintf("postgres://maskpbx@127.0.0.1:%d/postgres?sslmode=disable", port)
}

// Database creates a fresh, empty database for one test and returns its URL.
func Database(t testing.TB) string {
	t.Helper()
	pgOnce.Do(startCluster)
	if pgErr != nil {
		t.Fatalf("testenv: %v", pgErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("testenv: connect: %v", err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	return strings.Replace(pgURL, "/postgres?", "/"+name+"?", 1)
}

// NATS starts an embedded NATS server with JetStream for one test and
// returns its URL with the PBX's credentials in it (nats://user:password@),
// so a plain bus.Connect gets in as the PBX.
func NATS(t testing.TB) string {
	t.Helper()
	e, users := NATSServer(t)
	return WithCredentials(e.URL(), bus.UserPBX, users.PBX)
}

// NATSServer starts an embedded NATS server with JetStream for one test,
// with fresh passwords for its users.
func NATSServer(t testing.TB) (*bus.Embedded, bus.Users) {
	t.Helper()
	users := bus.NewUsers()
	e, err := bus.StartEmbedded(t.TempDir(), "127.0.0.1", -1, users)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e, users
}

// WithCredentials puts user and password into a nats:// URL.
func WithCredentials(natsURL, user, password string) string {
	u, err := url.Parse(natsURL)
	if err != nil {
		return natsURL
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// NATSCluster starts three clustered NATS servers with JetStream for one
// test (stopped when it ends), with fresh passwords for their users; urls
// lists the three client URLs comma-separated, without credentials.
func NATSCluster(t testing.TB) (members []*bus.Embedded, users bus.Users, urls string) {
	t.Helper()
	users = bus.NewUsers()
	members, err := bus.StartCluster(t.TempDir(), 3, users)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var list []string
	for _, m := range members {
		t.Cleanup(m.Shutdown)
		list = append(list, m.URL())
	}
	return members, users, strings.Join(list, ",")
}
