package bus

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// The embedded server's users. The PBX's user may do what a PBX node does
// (registrations, call events, JetStream); the recorder's may only consume
// the call events and publish its own recording.ready events.
const (
	UserPBX      = "maskpbx"
	UserRecorder = "maskpbx-recorder"
)

// RecorderInboxPrefix is where the recorder's replies come to: its
// connections use it (Auth.InboxPrefix), and its user may subscribe to
// nothing else, so it cannot read the replies meant for the PBX (whose
// inboxes are _INBOX.<nuid>). Being under _INBOX, it fits the usual
// "_INBOX.>" permission of an external cluster.
const RecorderInboxPrefix = "_INBOX.recorder"

// The subjects below spell the CALLS stream (events.StreamName, subjects
// events.SubjectAll), the REGISTRATIONS bucket (pbx.RegistrationsBucket),
// the CLUSTER bucket (pbx.ClusterBucket), the routing cache's change events
// (pbx.ChangeSubjects), the RECORDINGS object store
// (recorder.RecordingsBucket, stream OBJ_RECORDINGS), the LEASES bucket
// (recorder.LeasesBucket) and the IMPORTS bucket (CSV import reports, in
// cmd/maskpbx) out: bus cannot import those packages (their
// tests import bus).

// pbxPermissions: registrations, cluster, leases and imports KV, recording audio,
// alerts (alerts.<rule>, published by the node holding the alerts lease),
// call events, change events of the routing cache, the JetStream API, acks
// and flow control of its consumers, and replies.
var pbxPermissions = &server.Permissions{
	Publish: &server.SubjectPermission{Allow: []string{
		"$KV.REGISTRATIONS.>", "$KV.CLUSTER.>", "$KV.LEASES.>", "$KV.IMPORTS.>", "$O.RECORDINGS.>", "calls.>", "changes.>", "alerts.>", "$JS.API.>",
		"$JS.ACK.>", "$JS.FC.>", "_INBOX.>",
	}},
	Subscribe: &server.SubjectPermission{Allow: []string{
		"$KV.REGISTRATIONS.>", "$KV.CLUSTER.>", "$KV.LEASES.>", "$KV.IMPORTS.>", "calls.>", "changes.>", "alerts.>", "_INBOX.>",
	}},
}

// recorderPermissions: find (or first create) the CALLS stream, run the
// CDR writer's pull consumer on it, and publish recording.ready events;
// with --recordings-url jetstream:RECORDINGS, find or create the RECORDINGS
// object store, put, read (an ordered consumer with flow control) and
// delete (purge) its objects, and take the retention lease in LEASES.
// It may not update or delete a stream, touch registrations or the
// CLUSTER bucket, or publish the events a CDR is made of (offered,
// ringing, answered, ended).
var recorderPermissions = &server.Permissions{
	Publish: &server.SubjectPermission{Allow: []string{
		"calls.*.recording.ready",
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO.CALLS",
		"$JS.API.STREAM.CREATE.CALLS",
		"$JS.API.CONSUMER.CREATE.CALLS.>",
		"$JS.API.CONSUMER.DURABLE.CREATE.CALLS.*",
		"$JS.API.CONSUMER.INFO.CALLS.*",
		"$JS.API.CONSUMER.MSG.NEXT.CALLS.*",
		"$JS.ACK.CALLS.>",
		"$O.RECORDINGS.>",
		"$JS.API.STREAM.INFO.OBJ_RECORDINGS",
		"$JS.API.STREAM.CREATE.OBJ_RECORDINGS",
		"$JS.API.DIRECT.GET.OBJ_RECORDINGS.>",
		"$JS.API.STREAM.PURGE.OBJ_RECORDINGS",
		"$JS.API.CONSUMER.CREATE.OBJ_RECORDINGS.>",
		"$JS.API.CONSUMER.DELETE.OBJ_RECORDINGS.*",
		"$JS.FC.OBJ_RECORDINGS.>",
		"$KV.LEASES.>",
		"$JS.API.STREAM.INFO.KV_LEASES",
		"$JS.API.STREAM.CREATE.KV_LEASES",
		"$JS.API.DIRECT.GET.KV_LEASES.>",
	}},
	Subscribe: &server.SubjectPermission{Allow: []string{RecorderInboxPrefix + ".>"}},
}

// Users holds the passwords of the embedded server's two users.
type Users struct {
	PBX      string // password of UserPBX
	Recorder string // password of UserRecorder
}

// Password files under the key directory, one per user.
const (
	PBXPasswordFile      = "nats-pbx.password"
	RecorderPasswordFile = "nats-recorder.password"
)

// passwordBytes is the entropy of a generated password.
const passwordBytes = 32

// NewUsers returns users with fresh random passwords.
func NewUsers() Users {
	return Users{PBX: newPassword(), Recorder: newPassword()}
}

// LoadUsers reads the passwords from dir (PBXPasswordFile,
// RecorderPasswordFile), generating each missing one once (0600). The
// files are the embedded NATS server's only credentials: whoever can read
// them can act as the PBX or the recorder on the bus.
func LoadUsers(dir string) (Users, error) {
	var u Users
	var err error
	if u.PBX, err = loadPassword(filepath.Join(dir, PBXPasswordFile)); err != nil {
		return u, err
	}
	if u.Recorder, err = loadPassword(filepath.Join(dir, RecorderPasswordFile)); err != nil {
		return u, err
	}
	return u, nil
}

func (u Users) validate() error {
	if len(u.PBX) < 16 || len(u.Recorder) < 16 || u.PBX == u.Recorder {
		return errors.New("bus: embedded NATS needs two distinct passwords of 16 characters or more")
	}
	return nil
}

func (u Users) serverUsers() []*server.User {
	return []*server.User{
		{Username: UserPBX, Password: u.PBX, Permissions: pbxPermissions},
		{Username: UserRecorder, Password: u.Recorder, Permissions: recorderPermissions},
	}
}

// PBXAuth is how the PBX connects to the embedded server.
func (u Users) PBXAuth() Auth { return Auth{User: UserPBX, Password: u.PBX} }

// RecorderAuth is how a recorder connects to the embedded server.
func (u Users) RecorderAuth() Auth {
	return Auth{User: UserRecorder, Password: u.Recorder, InboxPrefix: RecorderInboxPrefix}
}

// newPassword is a random password that starts with a letter: nats-server
// reads a $VARIABLE in its configuration (deploy/nats/accounts.conf) as a
// value of its own syntax, and one starting with digits can read as a
// number, a size or a date ("12-…") and fail the server's start.
func newPassword() string {
	b := make([]byte, passwordBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return "p" + base64.RawURLEncoding.EncodeToString(b)
}

func loadPassword(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		p := strings.TrimSpace(string(b))
		if len(p) < 16 {
			return "", fmt.Errorf("bus: %s: password shorter than 16 characters", path)
		}
		return p, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("bus: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("bus: %w", err)
	}
	p := newPassword()
	// O_EXCL: two processes starting at once must not each write one.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return loadPassword(path)
	}
	if err != nil {
		return "", fmt.Errorf("bus: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(p + "\n"); err != nil {
		return "", fmt.Errorf("bus: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("bus: %w", err)
	}
	return p, nil
}

// Auth is how a client proves itself to NATS: a user and password, or a
// creds file (JWT and nkey seed, for a cluster run with decentralised
// auth). CAFile adds trust roots for a tls:// URL; CertFile and KeyFile
// are a client certificate for a server that asks for one. InboxPrefix,
// if set, replaces _INBOX for the connection's replies.
type Auth struct {
	User, Password    string
	CredsFile         string
	CAFile            string
	CertFile, KeyFile string
	InboxPrefix       string
}

// ErrNoCredentials means a NATS connection was to be opened without any
// credentials.
var ErrNoCredentials = errors.New("bus: NATS needs credentials (a user and password, or a creds file)")

// HasCredentials reports whether a names a user or a creds file.
func (a Auth) HasCredentials() bool { return a.User != "" || a.CredsFile != "" }

func (a Auth) options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.User != "" && a.CredsFile != "":
		return nil, errors.New("bus: a NATS user and a creds file are exclusive")
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.Password != "":
		return nil, errors.New("bus: a NATS password without a user")
	case a.CredsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		return nil, errors.New("bus: a NATS client certificate needs both its certificate and key files")
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	if a.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(a.InboxPrefix))
	}
	return opts, nil
}
