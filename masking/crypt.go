package masking

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// keySize is the length of every key: AES-256 and a 256-bit HMAC key.
const keySize = 32

// ErrBadKey says a key is unusable (wrong length, not base64, or the
// encryption key reused as the index key); the process must not start with it.
var ErrBadKey = errors.New("masking: bad key")

// ErrUnknownKeyID says a ciphertext was sealed with a key this Keyring does
// not hold, typically an old key dropped from the configuration too early.
var ErrUnknownKeyID = errors.New("masking: ciphertext sealed with an unknown key")

// errCorrupt says a ciphertext failed authentication: it was altered, truncated
// or paired with the wrong key id. Unexported: callers cannot act on it
// differently from any other storage fault.
var errCorrupt = errors.New("masking: ciphertext corrupt or tampered")

// Keyring holds the keys that protect numbers at rest: the current encryption
// key, older encryption keys still needed to read old rows, and the separate
// key of the blind index. The index key is separate so that losing one key
// does not give away the other, and so encryption keys rotate without
// recomputing every index.
// A Keyring is safe for concurrent use.
type Keyring struct {
	encID    string
	aeads    map[string]cipher.AEAD // by key id; includes the current key
	indexKey []byte
	indexID  string
}

// NewKeyring builds a Keyring. encKey seals new numbers; oldEncKeys only
// open rows sealed before a rotation; indexKey keys the blind index. Each key
// must be 32 bytes and encKey must differ from indexKey, since using one key
// for two purposes weakens both; otherwise the error wraps ErrBadKey.
func NewKeyring(encKey, indexKey []byte, oldEncKeys ...[]byte) (*Keyring, error) {
	for _, key := range append([][]byte{encKey, indexKey}, oldEncKeys...) {
		if len(key) != keySize {
			return nil, fmt.Errorf("%w: want %d bytes, got %d", ErrBadKey, keySize, len(key))
		}
	}
	k := &Keyring{
		encID:    KeyID(encKey),
		aeads:    make(map[string]cipher.AEAD),
		indexKey: bytes.Clone(indexKey),
		indexID:  KeyID(indexKey),
	}
	keys := map[string][]byte{} // id -> key, to catch id collisions
	for _, key := range append([][]byte{encKey}, oldEncKeys...) {
		if bytes.Equal(key, indexKey) {
			return nil, fmt.Errorf("%w: encryption key equals index key", ErrBadKey)
		}
		id := KeyID(key)
		if prev, ok := keys[id]; ok {
			if !bytes.Equal(prev, key) {
				return nil, fmt.Errorf("%w: two keys share id %s", ErrBadKey, id)
			}
			continue
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		keys[id] = key
		k.aeads[id] = aead
	}
	return k, nil
}

// KeyID names a key without revealing it, so rows can record which key
// sealed them and logs can say which key is in use: the first 8 hex chars of
// sha256("maskpbx-key-id" || key).
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("maskpbx-key-id"), key...))
	return hex.EncodeToString(sum[:4])
}

// EncKeyID is the id of the key Seal uses now; store it next to each
// ciphertext.
func (k *Keyring) EncKeyID() string { return k.encID }

// IndexKeyID is the id of the blind index key; a change means every blind
// index must be recomputed.
func (k *Keyring) IndexKeyID() string { return k.indexID }

// SealedPhone is a client number as it is stored: the ciphertext and the
// blind index, each with the id of the key that made it. Only Seal makes one
// and only a Keyring opens it; storage keeps it as it is.
type SealedPhone struct {
	Ciphertext []byte
	EncKeyID   string
	BlindIndex []byte
	IndexKeyID string
}

// Seal encrypts a number (pass Normalize's output) with the current key and
// computes its blind index, so a caller stores the result without assembling
// it. The ciphertext is nonce || AES-256-GCM output; the key id is bound as
// additional data so a ciphertext cannot be passed off under another id.
func (k *Keyring) Seal(e164 string) (SealedPhone, error) {
	aead := k.aeads[k.encID]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return SealedPhone{}, fmt.Errorf("masking: nonce: %w", err)
	}
	return SealedPhone{
		Ciphertext: aead.Seal(nonce, nonce, []byte(e164), []byte(k.encID)),
		EncKeyID:   k.encID,
		BlindIndex: k.BlindIndex(e164),
		IndexKeyID: k.indexID,
	}, nil
}

// OpenPhone decrypts a sealed number. Only the PBX (at dial time) and an
// audited reveal call it.
func (k *Keyring) OpenPhone(p SealedPhone) (string, error) {
	return k.open(p.Ciphertext, p.EncKeyID)
}

// open decrypts a ciphertext from Seal with the key named by keyID, current
// or old, so rows sealed before a rotation stay readable. It returns
// ErrUnknownKeyID if that key is not held, and an error if the ciphertext was
// altered.
func (k *Keyring) open(ciphertext []byte, keyID string) (string, error) {
	plain, err := k.openAAD(ciphertext, keyID, keyID)
	return string(plain), err
}

// openAAD decrypts nonce || sealed with the key keyID and additional data aad.
func (k *Keyring) openAAD(ciphertext []byte, keyID, aad string) ([]byte, error) {
	aead, ok := k.aeads[keyID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKeyID, keyID)
	}
	if len(ciphertext) < aead.NonceSize()+aead.Overhead() {
		return nil, errCorrupt
	}
	nonce, sealed := ciphertext[:aead.NonceSize()], ciphertext[aead.NonceSize():]
	plain, err := aead.Open(nil, nonce, sealed, []byte(aad))
	if err != nil {
		return nil, errCorrupt
	}
	return plain, nil
}

// BlindIndex is the lookup key for a number (pass Normalize's output):
// HMAC-SHA256 under the index key, 32 bytes. It lets caller-ID lookup find a
// client by number with an equality match, while a database dump without the
// key reveals nothing.
func (k *Keyring) BlindIndex(e164 string) []byte {
	mac := hmac.New(sha256.New, k.indexKey)
	mac.Write([]byte(e164))
	return mac.Sum(nil)
}

// DecodeKey reads a key as configured (MASKPBX_ENCRYPTION_KEY,
// MASKPBX_INDEX_KEY): standard base64 of 32 bytes, surrounding whitespace
// ignored. Anything else wraps ErrBadKey; the error never echoes the input.
func DecodeKey(b64 string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return nil, fmt.Errorf("%w: not standard base64", ErrBadKey)
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("%w: want %d bytes, got %d", ErrBadKey, keySize, len(key))
	}
	return key, nil
}

// GenerateKey returns a fresh random 32-byte key, for first start when no key
// is configured.
func GenerateKey() ([]byte, error) {
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("masking: generate key: %w", err)
	}
	return key, nil
}

// secretAAD marks a sealed secret apart from a sealed phone number, so one
// cannot be passed off as the other.
const secretAAD = "secret:"

// SealSecret encrypts a secret maskpbx must use later (a webhook's signing
// key) with the current key; it returns the ciphertext and the key's id.
func (k *Keyring) SealSecret(secret []byte) ([]byte, string, error) {
	aead := k.aeads[k.encID]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, "", fmt.Errorf("masking: nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, secret, []byte(secretAAD+k.encID)), k.encID, nil
}

// OpenSecret decrypts what SealSecret made with the key named keyID.
func (k *Keyring) OpenSecret(ciphertext []byte, keyID string) ([]byte, error) {
	return k.openAAD(ciphertext, keyID, secretAAD+keyID)
}
