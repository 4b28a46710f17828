package masking

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

const testNumber = "+79161234567"

// seqKey returns 32 bytes counting up from first: fixed keys make the
// known-answer vectors below reproducible.
func seqKey(first byte) []byte {
	k := make([]byte, keySize)
	for i := range k {
		k[i] = first + byte(i)
	}
	return k
}

func newTestKeyring(t *testing.T, enc, index []byte, old ...[]byte) *Keyring {
	t.Helper()
	k, err := NewKeyring(enc, index, old...)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func mustGenerate(t *testing.T) []byte {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return key
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := newTestKeyring(t, mustGenerate(t), mustGenerate(t))
	for _, number := range []string{testNumber, "+442079460958", ""} {
		p, err := k.Seal(number)
		if err != nil {
			t.Fatalf("Seal(%q): %v", number, err)
		}
		if p.EncKeyID != k.EncKeyID() {
			t.Errorf("Seal key id = %q, want current %q", p.EncKeyID, k.EncKeyID())
		}
		if !bytes.Equal(p.BlindIndex, k.BlindIndex(number)) || p.IndexKeyID != k.IndexKeyID() {
			t.Errorf("Seal(%q) blind index %x under %q, want %x under %q",
				number, p.BlindIndex, p.IndexKeyID, k.BlindIndex(number), k.IndexKeyID())
		}
		got, err := k.OpenPhone(p)
		if err != nil || got != number {
			t.Errorf("OpenPhone(Seal(%q)) = %q, %v", number, got, err)
		}
	}
}

// seal is Seal for tests that only need the ciphertext and its key id.
func seal(t *testing.T, k *Keyring, number string) (ct []byte, keyID string) {
	t.Helper()
	p, err := k.Seal(number)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return p.Ciphertext, p.EncKeyID
}

func TestSealHidesNumber(t *testing.T) {
	k := newTestKeyring(t, mustGenerate(t), mustGenerate(t))
	ct1, _ := seal(t, k, testNumber)
	ct2, _ := seal(t, k, testNumber)
	if bytes.Equal(ct1, ct2) {
		t.Error("two seals of one number are equal: nonce not random")
	}
	digits := strings.TrimPrefix(testNumber, "+")
	for _, ct := range [][]byte{ct1, ct2} {
		for i := 0; i+4 <= len(digits); i++ {
			if run := digits[i : i+4]; bytes.Contains(ct, []byte(run)) {
				t.Errorf("ciphertext contains digit run %q of the number", run)
			}
		}
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	k := newTestKeyring(t, seqKey(0), seqKey(32), seqKey(64))
	ct, id := seal(t, k, testNumber)
	flip := func(i int) []byte {
		c := bytes.Clone(ct)
		c[i] ^= 0x01
		return c
	}
	tests := []struct {
		name  string
		ct    []byte
		keyID string
	}{
		{"nonce bit flipped", flip(0), id},
		{"body bit flipped", flip(len(ct) / 2), id},
		{"tag bit flipped", flip(len(ct) - 1), id},
		{"truncated", ct[:len(ct)-1], id},
		{"shorter than nonce and tag", ct[:10], id},
		{"empty", nil, id},
		{"extended", append(bytes.Clone(ct), 0), id},
		{"other held key id", ct, KeyID(seqKey(64))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.open(tt.ct, tt.keyID)
			if !errors.Is(err, errCorrupt) || got != "" {
				t.Errorf("Open = %q, %v; want errCorrupt", got, err)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	oldKey, newKey, index := seqKey(0), seqKey(64), seqKey(32)
	before := newTestKeyring(t, oldKey, index)
	ct, id := seal(t, before, testNumber)

	after := newTestKeyring(t, newKey, index, oldKey)
	if got, err := after.open(ct, id); err != nil || got != testNumber {
		t.Errorf("rotated keyring Open(old row) = %q, %v", got, err)
	}
	newCt, newID := seal(t, after, testNumber)
	if newID != KeyID(newKey) || newID == id {
		t.Errorf("after rotation Seal uses key %q, want new key %q", newID, KeyID(newKey))
	}
	if !bytes.Equal(before.BlindIndex(testNumber), after.BlindIndex(testNumber)) {
		t.Error("rotating the encryption key changed the blind index")
	}

	// A keyring that never got the new key cannot read new rows.
	if _, err := before.open(newCt, newID); !errors.Is(err, ErrUnknownKeyID) {
		t.Errorf("old keyring Open(new row) err = %v, want ErrUnknownKeyID", err)
	}
	// Dropping the old key too early makes old rows unreadable, detectably.
	dropped := newTestKeyring(t, newKey, index)
	if _, err := dropped.open(ct, id); !errors.Is(err, ErrUnknownKeyID) {
		t.Errorf("Open with dropped key err = %v, want ErrUnknownKeyID", err)
	}
}

func TestOpenUnknownKeyID(t *testing.T) {
	k := newTestKeyring(t, seqKey(0), seqKey(32))
	ct, _ := seal(t, k, testNumber)
	for _, id := range []string{"", "deadbeef", KeyID(seqKey(32))} {
		if _, err := k.open(ct, id); !errors.Is(err, ErrUnknownKeyID) {
			t.Errorf("Open(keyID %q) err = %v, want ErrUnknownKeyID", id, err)
		}
	}
}

func TestBlindIndex(t *testing.T) {
	k := newTestKeyring(t, seqKey(0), seqKey(32))

	// Known answer, computed independently with Python's hmac module: stored
	// indexes must stay valid across releases.
	const want = "152f7f8163f67891d89fa3aecd26e41ca943c3cacbbc12899c81e2d2cc7a8d1b"
	if got := hex.EncodeToString(k.BlindIndex(testNumber)); got != want {
		t.Errorf("BlindIndex = %s, want %s", got, want)
	}
	if !bytes.Equal(k.BlindIndex(testNumber), k.BlindIndex(testNumber)) {
		t.Error("BlindIndex is not stable")
	}
	if bytes.Equal(k.BlindIndex(testNumber), k.BlindIndex("+79161234568")) {
		t.Error("two numbers share a blind index")
	}
	other := newTestKeyring(t, seqKey(0), seqKey(64))
	if bytes.Equal(k.BlindIndex(testNumber), other.BlindIndex(testNumber)) {
		t.Error("blind index does not depend on the index key")
	}
}

func TestKeyID(t *testing.T) {
	// Known answers from sha256("maskpbx-key-id" || key)[:8 hex], computed
	// independently with Python's hashlib.
	if got := KeyID(seqKey(0)); got != "0ebef86f" {
		t.Errorf("KeyID(enc) = %s, want 0ebef86f", got)
	}
	k := newTestKeyring(t, seqKey(0), seqKey(32))
	if k.EncKeyID() != "0ebef86f" || k.IndexKeyID() != "17d78d4f" {
		t.Errorf("key ids = %s, %s; want 0ebef86f, 17d78d4f", k.EncKeyID(), k.IndexKeyID())
	}
}

func TestNewKeyringRejectsBadKeys(t *testing.T) {
	good, index := seqKey(0), seqKey(32)
	tests := []struct {
		name       string
		enc, index []byte
		old        [][]byte
	}{
		{"nil enc", nil, index, nil},
		{"short enc", good[:31], index, nil},
		{"long index", good, append(bytes.Clone(index), 0), nil},
		{"16-byte old key", good, index, [][]byte{good[:16]}},
		{"enc equals index", good, bytes.Clone(good), nil},
		{"old equals index", good, index, [][]byte{bytes.Clone(index)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewKeyring(tt.enc, tt.index, tt.old...); !errors.Is(err, ErrBadKey) {
				t.Errorf("NewKeyring err = %v, want ErrBadKey", err)
			}
		})
	}
	t.Run("old key repeating current is fine", func(t *testing.T) {
		newTestKeyring(t, good, index, good)
	})
}

func TestKeyringCopiesKeys(t *testing.T) {
	enc, index := seqKey(0), seqKey(32)
	k := newTestKeyring(t, enc, index)
	before := k.BlindIndex(testNumber)
	ct, id := seal(t, k, testNumber)
	clear(enc)
	clear(index)
	if !bytes.Equal(before, k.BlindIndex(testNumber)) {
		t.Error("blind index changed when the caller reused its key buffer")
	}
	if got, err := k.open(ct, id); err != nil || got != testNumber {
		t.Errorf("Open after caller cleared key = %q, %v", got, err)
	}
}

func TestDecodeKey(t *testing.T) {
	key := seqKey(0)
	b64 := base64.StdEncoding.EncodeToString(key)
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"valid", b64, true},
		{"trailing newline from a key file", b64 + "\n", true},
		{"empty", "", false},
		{"not base64", "not a key!", false},
		{"url alphabet", base64.URLEncoding.EncodeToString(seqKey(250)), false},
		{"31 bytes", base64.StdEncoding.EncodeToString(key[:31]), false},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 0)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeKey(tt.in)
			if !tt.ok {
				if !errors.Is(err, ErrBadKey) {
					t.Fatalf("DecodeKey err = %v, want ErrBadKey", err)
				}
				if strings.Contains(err.Error(), strings.TrimSpace(tt.in)) && tt.in != "" {
					t.Errorf("error %q echoes the key", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, key) {
				t.Errorf("DecodeKey = %x, %v; want %x", got, err, key)
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	a, b := mustGenerate(t), mustGenerate(t)
	if len(a) != keySize || bytes.Equal(a, b) {
		t.Fatalf("GenerateKey gave %x and %x", a, b)
	}
	newTestKeyring(t, a, b)
}
