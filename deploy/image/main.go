// Command image writes maskpbx's container image as a docker-archive tar
// (what `docker load` and `podman load` read) without pulling any base
// image or needing a daemon: one layer holding the static binary, the CA
// certificates of the build machine (for TLS to NATS, Postgres and trunks)
// and an empty data directory owned by the unprivileged user the image runs
// as. `make image` builds the binary and runs it:
//
//	go run ./deploy/image <static maskpbx binary> <output.tar> [tag]
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// The image's user and group: no name, no home, no shell; the id distroless
// images use for "nonroot".
const runAs = 65532

// caBundle is where Debian keeps the system's CA certificates.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

func main() {
	if len(os.Args) < 3 || len(os.Args) > 4 {
		fmt.Fprintln(os.Stderr, "usage: image <static maskpbx binary> <output.tar> [tag]")
		os.Exit(2)
	}
	tag := "maskpbx:latest"
	if len(os.Args) == 4 {
		tag = os.Args[3]
	}
	if err := write(os.Args[1], os.Args[2], tag); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func write(binary, out, tag string) error {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		return errors.New(binary + " is not an ELF binary")
	}
	ca, err := os.ReadFile(caBundle)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	layer, err := rootfs(bin, ca)
	if err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer)
	layerID := hex.EncodeToString(layerSum[:])
	config, err := json.Marshal(imageConfig("sha256:" + layerID))
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": configName, "RepoTags": []string{tag}, "Layers": []string{layerID + "/layer.tar"},
	}})
	if err != nil {
		return err
	}

	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	for _, f := range []struct {
		name string
		data []byte
	}{{configName, config}, {layerID + "/layer.tar", layer}, {"manifest.json", manifest}} {
		if err := addFile(tw, f.name, f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, archive.Bytes(), 0o644)
}

// entry is one file or directory (data nil) of the layer.
type entry struct {
	name string
	data []byte
	mode int64
	uid  int
}

// rootfs is the image's only layer, as a tar.
func rootfs(bin, ca []byte) ([]byte, error) {
	// Who the image runs as, for the programs that look the user up.
	passwd := fmt.Sprintf("root:x:0:0:root:/:/sbin/nologin\nmaskpbx:x:%d:%d:maskpbx:/var/lib/maskpbx:/sbin/nologin\n", runAs, runAs)
	group := fmt.Sprintf("root:x:0:\nmaskpbx:x:%d:\n", runAs)
	entries := []entry{
		{name: "etc/", mode: 0o755}, {name: "tmp/", mode: 0o1777}, {name: "var/", mode: 0o755},
		{name: "var/lib/", mode: 0o755}, {name: "var/lib/maskpbx/", mode: 0o700, uid: runAs},
		{name: "etc/passwd", data: []byte(passwd), mode: 0o644}, {name: "etc/group", data: []byte(group), mode: 0o644},
		{name: "maskpbx", data: bin, mode: 0o755},
	}
	if ca != nil {
		entries = append(entries, entry{name: "etc/ssl/", mode: 0o755}, entry{name: "etc/ssl/certs/", mode: 0o755},
			entry{name: caBundle[1:], data: ca, mode: 0o644})
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: e.mode, Size: int64(len(e.data)),
			Uid: e.uid, Gid: e.uid, ModTime: epoch}
		if e.data == nil {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// epoch dates every file, so the same binary makes the same image.
var epoch = time.Unix(0, 0)

func addFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)),
		ModTime: epoch}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// imageConfig is the OCI/docker image configuration: serve with its data
// in the volume /var/lib/maskpbx, as the unprivileged user.
func imageConfig(layerDiffID string) map[string]any {
	return map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.UTC().Format(time.RFC3339),
		"config": map[string]any{
			"User":       fmt.Sprintf("%d:%d", runAs, runAs),
			"Entrypoint": []string{"/maskpbx"},
			"Cmd":        []string{"serve", "--data-dir", "/var/lib/maskpbx"},
			"Env":        []string{"MASKPBX_HTTP_LISTEN=0.0.0.0:8080", "MASKPBX_SIP_LISTEN=0.0.0.0:5060"},
			"ExposedPorts": map[string]any{
				"5060/udp": struct{}{}, "5060/tcp": struct{}{}, "5061/tcp": struct{}{}, "8080/tcp": struct{}{},
			},
			"Volumes":    map[string]any{"/var/lib/maskpbx": struct{}{}},
			"WorkingDir": "/var/lib/maskpbx",
			"Labels":     map[string]string{"org.opencontainers.image.title": "maskpbx"},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{layerDiffID}},
		"history": []map[string]string{{"created": epoch.UTC().Format(time.RFC3339), "created_by": "maskpbx deploy/image"}},
	}
}
