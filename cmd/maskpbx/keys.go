package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// loadKeys takes the encryption and index keys from the environment, or
// from files in dataDir/keys that are generated once (0600) if missing.
// Losing the generated files means losing every stored number: back them up.
func loadKeys(dataDir string) (*masking.Keyring, error) {
	enc, err := loadKey("MASKPBX_ENCRYPTION_KEY", filepath.Join(dataDir, "keys", "encryption.key"))
	if err != nil {
		return nil, err
	}
	idx, err := loadKey("MASKPBX_INDEX_KEY", filepath.Join(dataDir, "keys", "index.key"))
	if err != nil {
		return nil, err
	}
	return masking.NewKeyring(enc, idx)
}

// loadAudit gives the Stores of a process the audit chain's HMAC key
// (MASKPBX_AUDIT_KEY, or dataDir/keys/audit.key generated once) and the
// anchor of its head (dataDir/keys/audit.head). Neither is in the database,
// so whoever can write to audit_log can neither recompute the chain nor cut
// its newest rows unseen. Every node of a cluster needs the same key.
func loadAudit(dataDir string) (storage.Option, error) {
	key, err := loadKey("MASKPBX_AUDIT_KEY", filepath.Join(dataDir, "keys", "audit.key"))
	if err != nil {
		return nil, err
	}
	return storage.WithAudit(key, storage.NewFileAnchor(filepath.Join(dataDir, "keys", "audit.head"))), nil
}

func loadKey(env, path string) ([]byte, error) {
	if v := os.Getenv(env); v != "" {
		k, err := masking.DecodeKey(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", env, err)
		}
		return k, nil
	}
	if b, err := os.ReadFile(path); err == nil {
		k, err := masking.DecodeKey(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k, err := masking.GenerateKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// O_EXCL: two processes starting at once must not each write a key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(k) + "\n"); err != nil {
		return nil, err
	}
	return k, f.Sync()
}

// siprecSecretFile is the shared secret of SIPREC digest authentication
// under the data dir: the PBX answers the recorder's challenge with it, the
// recorder checks it. A PBX and a recorder sharing a data dir share it.
const siprecSecretFile = "siprec.secret"

// loadSIPRECSecret is the flag's value if set, else the secret in
// dataDir/keys, generated once (0600).
func loadSIPRECSecret(flagValue, dataDir string) (string, error) {
	if flagValue != "" {
		if len(flagValue) < 16 {
			return "", errors.New("the SIPREC secret must be 16 characters or more")
		}
		return flagValue, nil
	}
	path := filepath.Join(dataDir, "keys", siprecSecretFile)
	if b, err := os.ReadFile(path); err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= 16 {
			return s, nil
		}
		return "", fmt.Errorf("%s: secret shorter than 16 characters", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	k, err := masking.GenerateKey()
	if err != nil {
		return "", err
	}
	secret := base64.RawURLEncoding.EncodeToString(k)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) { // another process was quicker
		return loadSIPRECSecret("", dataDir)
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.WriteString(secret + "\n"); err != nil {
		return "", err
	}
	return secret, f.Sync()
}
