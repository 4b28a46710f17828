package main

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The example environment files of deploy/systemd set only variables that
// name a flag of their command: a misspelt one would be ignored silently.
// Each file, applied as the environment, parses.
func TestDeployEnvExamples(t *testing.T) {
	for file, flags := range map[string]*flag.FlagSet{
		"maskpbx.env.example":  newFlagSet("serve", &Config{}),
		"recorder.env.example": newRecorderFlagSet(&recorderConfig{}),
	} {
		t.Run(file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("..", "..", "deploy", "systemd", file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			known := map[string]bool{}
			flags.VisitAll(func(fl *flag.Flag) {
				known["MASKPBX_"+strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))] = true
			})
			set := 0
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				name, value, ok := strings.Cut(line, "=")
				if !ok || !known[name] {
					t.Errorf("%s: %q names no flag", file, line)
					continue
				}
				t.Setenv(name, value)
				set++
			}
			if set == 0 {
				t.Fatalf("%s sets nothing", file)
			}
			if file == "maskpbx.env.example" {
				if _, err := parseConfig("serve", nil); err != nil {
					t.Fatalf("serve with %s: %v", file, err)
				}
			} else if _, err := parseRecorderConfig(nil); err != nil {
				t.Fatalf("recorder with %s: %v", file, err)
			}
		})
	}
}
