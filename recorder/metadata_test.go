package recorder

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the expected part of golden files")

const goldenSep = "\n----- parsed -----\n"

// TestMetadataGolden parses each testdata/metadata/*.mdtest: the document,
// then the separator, then what ParseMetadata must make of it (the result
// as JSON, or the error).
func TestMetadataGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/metadata/*.mdtest")
	if len(files) < 8 {
		t.Fatalf("only %d golden files", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			doc, want, _ := strings.Cut(string(raw), goldenSep)
			m, err := ParseMetadata([]byte(doc))
			var got string
			if err != nil {
				if !errors.Is(err, ErrBadMetadata) {
					t.Fatalf("error %v is not ErrBadMetadata", err)
				}
				if strings.Contains(err.Error(), "7916") {
					t.Fatalf("error quotes the document: %v", err)
				}
				got = "error: " + err.Error() + "\n"
			} else {
				j, _ := json.MarshalIndent(m, "", "  ")
				got = string(j) + "\n"
			}
			if *update {
				if err := os.WriteFile(f, []byte(doc+goldenSep+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func FuzzParseMetadata(f *testing.F) {
	files, _ := filepath.Glob("testdata/metadata/*.mdtest")
	for _, file := range files {
		raw, _ := os.ReadFile(file)
		doc, _, _ := strings.Cut(string(raw), goldenSep)
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		m, err := ParseMetadata(doc)
		if err != nil {
			if !errors.Is(err, ErrBadMetadata) {
				t.Fatalf("error %v is not ErrBadMetadata", err)
			}
			return
		}
		// Whatever parses names nothing but valid ids.
		for _, id := range []string{m.CallID, m.ClientID, m.ManagerID} {
			if id != "" && !uuidRE.MatchString(id) {
				t.Fatalf("invalid id %q accepted", id)
			}
		}
		if m.ClientCode != "" && !clientCodeRE.MatchString(m.ClientCode) {
			t.Fatalf("invalid code %q accepted", m.ClientCode)
		}
		if (m.ClientID != "" || m.ManagerID != "") && !m.Ours() {
			t.Fatal("ids without a call")
		}
	})
}
