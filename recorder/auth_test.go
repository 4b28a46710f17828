package recorder

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

const testSecret = "the-shared-secret-of-this-test"

// TestSRCAuthentication: finding 2 of issue 11 (a local process started
// a recording naming a real client and manager) is refused without the
// shared secret, and nothing of it is stored; the SRC that has it records.
func TestSRCAuthentication(t *testing.T) {
	r := startRecorder(t, t.TempDir(), func(c *ServerConfig) { c.Secret = testSecret })
	s := newSRC(t)
	mixed, siprec := "multipart/mixed;boundary=b1", sip.NewHeader("Require", "siprec")
	body := multipartBody(srcOffer("PCMU"), ourMetadata(testCallID))
	for _, tc := range []struct {
		name   string
		auth   sipgo.AnswerOptions
		status int
	}{
		{"no credentials", sipgo.AnswerOptions{}, 401},
		{"wrong secret", sipgo.AnswerOptions{Username: SRCUser, Password: "guessed-secret"}, 403},
		{"wrong user", sipgo.AnswerOptions{Username: "admin", Password: testSecret}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.inviteAs(r, tc.auth, mixed, body, siprec)
			var e *sipgo.ErrDialogResponse
			if !errors.As(err, &e) || e.Res.StatusCode != tc.status {
				t.Fatalf("got %v, want %d", err, tc.status)
			}
		})
	}
	if rows := r.cat.all(); len(rows) != 0 {
		t.Fatalf("unauthenticated sessions wrote rows %+v", rows)
	}
	if files, _ := filepath.Glob(filepath.Join(r.dataDir, "recordings", "*", "*", "*", "*")); len(files) != 0 {
		t.Fatalf("unauthenticated sessions left files %v", files)
	}
	if evs := r.evs.list(); len(evs) != 0 {
		t.Fatalf("unauthenticated sessions announced %+v", evs)
	}

	d, ports, err := s.inviteAs(r, sipgo.AnswerOptions{Username: SRCUser, Password: testSecret}, mixed, body, siprec)
	if err != nil {
		t.Fatalf("the SRC with the secret: %v", err)
	}
	s.tone(ports["client"], "PCMU", 600, 0, 10, 1, nil)
	_ = d.Bye(context.Background())
	testenv.Eventually(t, 10*time.Second, func() bool {
		rows := r.cat.all()
		return len(rows) == 1 && rows[0].Status == storage.RecordingComplete && rows[0].CallID == testCallID
	}, "the authenticated session's recording")
}

// TestSRCAuthNonces: a nonce answers one INVITE (a captured Authorization
// cannot start a second recording) and only while it is fresh.
func TestSRCAuthNonces(t *testing.T) {
	now := time.Now()
	a := newSRCAuth(testSecret)
	a.now = func() time.Time { return now }
	req := func(challenge string) *sip.Request {
		uri := sip.Uri{Scheme: "sip", User: "recorder", Host: "127.0.0.1", Port: 5090}
		r := sip.NewRequest(sip.INVITE, uri)
		chal, err := digest.ParseChallenge(challenge)
		if err != nil {
			t.Fatal(err)
		}
		cred, err := digest.Digest(chal, digest.Options{Method: "INVITE", URI: uri.String(), Username: SRCUser,
			Password: testSecret, Count: 1})
		if err != nil {
			t.Fatal(err)
		}
		r.AppendHeader(sip.NewHeader("Authorization", cred.String()))
		return r
	}
	signed := req(a.challenge())
	if err := a.verify(signed); err != nil {
		t.Fatalf("genuine: %v", err)
	}
	if err := a.verify(signed); !errors.Is(err, errBadCredentials) {
		t.Fatalf("replayed: %v", err)
	}
	late := req(a.challenge())
	now = now.Add(nonceTTL + time.Second)
	if err := a.verify(late); !errors.Is(err, errUnauthenticated) {
		t.Fatalf("stale nonce: %v", err)
	}
	forged := req(newSRCAuth(testSecret).challenge()) // another recorder's nonce
	if err := a.verify(forged); !errors.Is(err, errUnauthenticated) {
		t.Fatalf("foreign nonce: %v", err)
	}
}
