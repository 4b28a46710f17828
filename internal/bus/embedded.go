// Package bus starts the embedded NATS server (JetStream on disk) that
// maskpbx uses when no external NATS is configured, and connects to NATS.
// Every connection carries credentials: the embedded server knows two users
// (auth.go) and refuses anyone else.
package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Embedded is an in-process NATS server with JetStream.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded runs a NATS server with JetStream stored under dir. Port -1
// picks a free port; host is the listen address (loopback by default).
// Only users' two users can connect, each with its own permissions
// (auth.go): a client without credentials is refused.
func StartEmbedded(dir, host string, port int, users Users) (*Embedded, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	if err := users.validate(); err != nil {
		return nil, err
	}
	// nats-server reports a port it can't bind only to its (silenced) log
	// and never becomes ready: try the port first, so that case is an error
	// naming the address, not a time-out.
	if port > 0 {
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("bus: embedded NATS: %w", err)
		}
		ln.Close()
	}
	opts := &server.Options{
		ServerName: "maskpbx-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
		Users:      users.serverUsers(),
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded NATS: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("bus: embedded NATS did not start")
	}
	return &Embedded{srv: srv}, nil
}

// URL is the client URL of the embedded server, without credentials.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// Connect opens a NATS connection that keeps reconnecting forever, so a NATS
// restart is a blip, not an outage. auth says how it proves itself (the
// URL's own user:password@ also does); a tls:// URL is verified against
// the system roots and auth.CAFile.
func Connect(ctx context.Context, url, name string, auth Auth) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := auth.options()
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("bus: connect: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	return nc, js, nil
}

// StartCluster runs n NATS servers with JetStream clustered on loopback
// ports of their own, as a company's three NATS machines would be, with
// users' users on each; stores under dir. Tests use it; a deployment runs
// nats-server from deploy/nats.
func StartCluster(dir string, n int, users Users) ([]*Embedded, error) {
	if err := users.validate(); err != nil {
		return nil, err
	}
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		var err error
		if clientPorts[i], err = freePort(); err != nil {
			return nil, err
		}
		if routePorts[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	var members []*Embedded
	stopAll := func() {
		for _, m := range members {
			m.Shutdown()
		}
	}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("maskpbx-nats-%d", i+1),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   filepath.Join(dir, fmt.Sprintf("nats-%d", i+1)),
			NoSigs:     true,
			NoLog:      true,
			Users:      users.serverUsers(),
			Cluster:    server.ClusterOpts{Name: "maskpbx", Host: "127.0.0.1", Port: routePorts[i]},
		}
		for j := range n {
			if j != i {
				opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", routePorts[j])})
			}
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			stopAll()
			return nil, fmt.Errorf("bus: cluster member %d: %w", i+1, err)
		}
		srv.Start()
		members = append(members, &Embedded{srv: srv})
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, m := range members {
		if !m.srv.ReadyForConnections(time.Until(deadline)) {
			stopAll()
			return nil, errors.New("bus: a cluster member did not start")
		}
	}
	// Ready when the JetStream meta leader knows every server: until then a
	// stream or consumer with n replicas finds "insufficient resources".
	for time.Now().Before(deadline) {
		for _, m := range members {
			if len(m.srv.JetStreamClusterPeers()) == n {
				return members, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopAll()
	return nil, errors.New("bus: the cluster's servers did not route to each other")
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
