package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The image make image writes: a docker-archive whose manifest, config and
// layer agree (digests), whose layer holds the static binary it was given
// (here a small one standing for maskpbx: make image builds the real one) and it runs, the
// data directory owned by the user the config runs as, and which is the
// same bytes when built twice from the same binary.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "maskpbx")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./testdata/hello")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "image.tar")
	if err := write(bin, out, "maskpbx:test"); err != nil {
		t.Fatal(err)
	}
	files := untar(t, readFile(t, out))
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest %s: %v", files["manifest.json"], err)
	}
	m := manifest[0]
	config, layer := files[m.Config], files[m.Layers[0]]
	if sum := sha256.Sum256(config); m.Config != hex.EncodeToString(sum[:])+".json" || m.RepoTags[0] != "maskpbx:test" {
		t.Fatalf("manifest %+v: config named by another digest", m)
	}
	var cfg struct {
		Config struct {
			User       string
			Entrypoint []string
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(config, &cfg); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(layer); len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("diff_ids %v do not name the layer", cfg.RootFS.DiffIDs)
	}
	if cfg.Config.User != "65532:65532" || len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/maskpbx" {
		t.Fatalf("config %+v: want user 65532, entrypoint /maskpbx", cfg.Config)
	}

	rootfs := map[string]*tar.Header{}
	contents := untarHeaders(t, layer, rootfs)
	if h := rootfs["var/lib/maskpbx/"]; h == nil || h.Uid != 65532 || h.Mode != 0o700 {
		t.Fatalf("data directory %+v: want 0700, owned by 65532", h)
	}
	// The binary in the layer is static and runs.
	inImage := filepath.Join(dir, "from-image")
	if err := os.WriteFile(inImage, contents["maskpbx"], 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(inImage)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary in the image is dynamically linked: it can't run FROM scratch")
		}
	}
	f.Close()
	if said, err := exec.Command(inImage).CombinedOutput(); err != nil || !strings.HasPrefix(string(said), "running as") {
		t.Fatalf("the image's binary does not run: %v %s", err, said)
	}

	again := filepath.Join(dir, "again.tar")
	if err := write(bin, again, "maskpbx:test"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, out), readFile(t, again)) {
		t.Fatal("two builds of the same binary differ")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func untar(t *testing.T, b []byte) map[string][]byte {
	return untarHeaders(t, b, map[string]*tar.Header{})
}

func untarHeaders(t *testing.T, b []byte, headers map[string]*tar.Header) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		headers[h.Name] = h
		if out[h.Name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
}
