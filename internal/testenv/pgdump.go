package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// PGDump dumps the database at url with the cluster's own pg_dump (data
// and schema, plain SQL) and returns the dump: what a stolen backup holds.
func PGDump(t testing.TB, url string) []byte {
	t.Helper()
	bin := os.Getenv("PGBIN")
	if bin == "" {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		slices.Sort(dirs) // the newest major version, as deploy/pg.sh picks
		if len(dirs) > 0 {
			bin = dirs[len(dirs)-1]
		}
	}
	out, err := exec.Command(filepath.Join(bin, "pg_dump"), "--no-owner", "--dbname", url).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	return out
}
