package main

import (
	"errors"
	"flag"
	"net/url"
	"strings"

	"github.com/maskpbx/maskpbx/internal/bus"
)

// natsClient is how serve and recorder connect to an external NATS
// (--nats-url): the embedded server's credentials are generated into the
// data dir instead (bus.LoadUsers).
type natsClient struct {
	User     string // --nats-user
	Password string // --nats-password, best given as MASKPBX_NATS_PASSWORD
	Creds    string // --nats-creds: a JWT + nkey seed file
	CA       string // --nats-ca: PEM trust roots for a tls:// URL
	Cert     string // --nats-cert: PEM client certificate, if the server asks for one
	Key      string // --nats-key: its key
	// Replicas is --nats-replicas: how many NATS servers keep each stream
	// and bucket of call events, registrations and cluster state a node
	// creates (serve also raises existing ones to it).
	Replicas int
}

func (n *natsClient) register(fs *flag.FlagSet) {
	fs.StringVar(&n.User, "nats-user", "", "user on the NATS of --nats-url")
	fs.StringVar(&n.Password, "nats-password", "", "password of --nats-user (prefer MASKPBX_NATS_PASSWORD: a flag shows in ps)")
	fs.StringVar(&n.Creds, "nats-creds", "", "NATS credentials file (JWT and nkey seed) instead of --nats-user")
	fs.StringVar(&n.CA, "nats-ca", "", "PEM file of the CA that signed the NATS server's certificate (tls:// URLs)")
	fs.StringVar(&n.Cert, "nats-cert", "", "PEM client certificate for a NATS server that asks for one")
	fs.StringVar(&n.Key, "nats-key", "", "PEM private key of --nats-cert")
	fs.IntVar(&n.Replicas, "nats-replicas", 1, "replicas of the CALLS stream and the REGISTRATIONS, CLUSTER and IMPORTS buckets: 3 on a three-server NATS cluster (serve raises existing ones at start, never lowers them)")
}

// checkReplicas says what is wrong with --nats-replicas.
func (n natsClient) checkReplicas() error {
	if n.Replicas < 1 || n.Replicas > 5 {
		return errors.New("--nats-replicas must be 1 to 5")
	}
	return nil
}

func (n natsClient) auth() bus.Auth {
	return bus.Auth{User: n.User, Password: n.Password, CredsFile: n.Creds, CAFile: n.CA, CertFile: n.Cert, KeyFile: n.Key}
}

// errNATSNoCredentials: --nats-url without a way to authenticate.
var errNATSNoCredentials = errors.New("needs credentials: --nats-user with MASKPBX_NATS_PASSWORD, --nats-creds, or user:password@ in the URL")

// check says what is wrong with connecting to urls (--nats-url, comma-
// separated) this way: every NATS connection carries credentials.
func (n natsClient) check(urls string) error {
	if n.User != "" && n.Creds != "" {
		return errors.New("--nats-user and --nats-creds are exclusive")
	}
	if n.Password != "" && n.User == "" {
		return errors.New("--nats-password needs --nats-user")
	}
	if (n.Cert == "") != (n.Key == "") {
		return errors.New("--nats-cert and --nats-key go together")
	}
	if n.User != "" || n.Creds != "" {
		return nil
	}
	for _, u := range strings.Split(urls, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.User == nil || p.User.Username() == "" {
			return errNATSNoCredentials
		}
	}
	return nil
}
