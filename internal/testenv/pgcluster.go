package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// PostgresCluster is a Postgres cluster of one test's own, for a test that
// stops and starts it (a database outage); the shared cluster of Database
// serves the package's other tests and must stay up.
type PostgresCluster struct {
	t    testing.TB
	dir  string
	port int
	// URL is the cluster's postgres database.
	URL string
}

// OwnPostgres starts a Postgres cluster for this test alone on a free
// port; it is stopped and removed when the test ends. It ignores
// MASKPBX_TEST_DATABASE_URL: an outside server can't be stopped by a test.
func OwnPostgres(t testing.TB) *PostgresCluster {
	t.Helper()
	base, err := os.MkdirTemp("", "maskpbx-pg-own-")
	if err != nil {
		t.Fatal(err)
	}
	c := &PostgresCluster{t: t, dir: filepath.Join(base, "data"), port: FreePort(t, "127.0.0.1")}
	c.URL = fmt.Sprintf("postgres://maskpbx@127.0.0.1:%d/postgres?sslmode=disable", c.port)
	t.Cleanup(func() {
		_ = exec.Command(pgScript(), "stop", c.dir).Run()
		_ = os.RemoveAll(base)
	})
	c.Start()
	return c
}

// Start starts the cluster (created the first time) and waits until it
// takes connections.
func (c *PostgresCluster) Start() {
	c.t.Helper()
	cmd := exec.Command(pgScript(), "start", c.dir, fmt.Sprint(c.port))
	cmd.Env = append(os.Environ(), "PG_FSYNC=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("testenv: start postgres: %v: %s", err, out)
	}
}

// Stop shuts the cluster down (fast: open connections are cut, as in a
// crash of the database server seen from the clients).
func (c *PostgresCluster) Stop() {
	c.t.Helper()
	if out, err := exec.Command(pgScript(), "stop", c.dir).CombinedOutput(); err != nil {
		c.t.Fatalf("testenv: stop postgres: %v: %s", err, out)
	}
}
