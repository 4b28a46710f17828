package bus_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
)

// TestDeployNATSCluster runs the three-server cluster of deploy/nats as an
// operator would (the files as shipped, with certificates of a test CA and
// loopback addresses instead of the three machines): its users have exactly
// the permissions of the embedded server's, the routes take only
// certificates of the CA, and a PBX node can keep its registrations in a
// bucket replicated three times, while the recorder can't end a call.
func TestDeployNATSCluster(t *testing.T) {
	dir := t.TempDir()
	tlsDir := writeTestPKI(t, dir)
	for _, name := range []string{"accounts.conf", "nats-1.conf", "nats-2.conf", "nats-3.conf"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", name))
		if err != nil {
			t.Fatal(err)
		}
		conf := strings.ReplaceAll(string(raw), "/etc/nats/tls", tlsDir)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	users := bus.NewUsers()
	t.Setenv("MASKPBX_PBX_PASSWORD", users.PBX)
	t.Setenv("MASKPBX_RECORDER_PASSWORD", users.Recorder)
	t.Setenv("NATS_SYSTEM_PASSWORD", bus.NewPassword())

	clientPorts, routePorts := make([]int, 3), make([]int, 3)
	for i := range 3 {
		clientPorts[i], routePorts[i] = testenv.FreePort(t, "127.0.0.1"), testenv.FreePort(t, "127.0.0.1")
	}
	var servers []*server.Server
	for i := range 3 {
		opts, err := server.ProcessConfigFile(filepath.Join(dir, fmt.Sprintf("nats-%d.conf", i+1)))
		if err != nil {
			t.Fatalf("nats-%d.conf: %v", i+1, err)
		}
		if i == 0 {
			checkDeployedPermissions(t, opts)
		}
		if opts.ServerName != fmt.Sprintf("nats-%d", i+1) || !opts.JetStream || opts.Cluster.Name != "maskpbx" ||
			len(opts.Routes) != 2 || opts.Cluster.TLSConfig == nil || opts.TLSConfig == nil {
			t.Fatalf("nats-%d.conf: name %q, jetstream %v, cluster %q, %d routes, route TLS %v, client TLS %v", i+1,
				opts.ServerName, opts.JetStream, opts.Cluster.Name, len(opts.Routes), opts.Cluster.TLSConfig != nil, opts.TLSConfig != nil)
		}
		// The three machines, on loopback.
		opts.Host, opts.Port = "127.0.0.1", clientPorts[i]
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", routePorts[i]
		opts.Routes = nil
		for j := range 3 {
			if j != i {
				opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", routePorts[j])})
			}
		}
		opts.StoreDir = filepath.Join(dir, fmt.Sprintf("js-%d", i+1))
		opts.NoSigs, opts.NoLog = true, true
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		t.Cleanup(srv.Shutdown)
		servers = append(servers, srv)
	}
	for i, srv := range servers {
		if !srv.ReadyForConnections(20 * time.Second) {
			t.Fatalf("nats-%d not ready", i+1)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		for _, srv := range servers {
			if srv.NumRoutes() < 2 {
				return false
			}
		}
		return true
	}, "the three servers routed to each other over mutual TLS")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serverURLs := fmt.Sprintf("tls://127.0.0.1:%d,tls://127.0.0.1:%d", clientPorts[0], clientPorts[2])
	ca := filepath.Join(tlsDir, "ca.pem")
	nc, js, err := bus.Connect(ctx, serverURLs, "pbx-node", bus.Auth{User: bus.UserPBX, Password: users.PBX, CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var kv jetstream.KeyValue
	testenv.Eventually(t, 20*time.Second, func() bool {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		kv, err = js.CreateKeyValue(actx, jetstream.KeyValueConfig{Bucket: "REGISTRATIONS", History: 1, Replicas: 3})
		return err == nil
	}, "a bucket replicated on the three servers")
	if _, err := kv.Put(ctx, "manager-1.phone", []byte("binding")); err != nil {
		t.Fatal(err)
	}

	rc, rjs, err := bus.Connect(ctx, fmt.Sprintf("tls://127.0.0.1:%d", clientPorts[1]), "recorder", bus.Auth{
		User: bus.UserRecorder, Password: users.Recorder, CAFile: ca, InboxPrefix: bus.RecorderInboxPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.Publish("calls.22222222-2222-4222-8222-222222222222.ended", []byte(`{}`)); err == nil {
		_ = rc.Flush()
		if rc.LastError() == nil {
			t.Fatal("the recorder published a call's end")
		}
	}
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	if _, err := rjs.KeyValue(dctx, "REGISTRATIONS"); err == nil {
		t.Fatal("the recorder opened the registrations")
	}

	if _, _, err := bus.Connect(ctx, fmt.Sprintf("tls://127.0.0.1:%d", clientPorts[0]), "stranger",
		bus.Auth{User: bus.UserPBX, Password: "guessed-password-guessed", CAFile: ca}); err == nil {
		t.Fatal("a wrong password connected")
	}
	// A route needs a certificate of the cluster's CA: a stranger's own is
	// refused before the server says a word; the CA's is answered.
	strangerPKI := writeTestPKI(t, t.TempDir())
	if info, err := routeHello(tlsDir, strangerPKI, routePorts[0]); err == nil {
		t.Fatalf("nats-1 answered a route with a stranger's certificate: %q", info)
	}
	if info, err := routeHello(tlsDir, tlsDir, routePorts[0]); err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("nats-1 to a route with the CA's certificate: %q, %v", info, err)
	}
}

// routeHello opens a TLS connection to a route port, trusting the CA in
// caDir and presenting the certificate in certDir, and reads the server's
// first line.
func routeHello(caDir, certDir string, port int) (string, error) {
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(caDir, "ca.pem"))
	if err != nil {
		return "", err
	}
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "server.pem"), filepath.Join(certDir, "server-key.pem"))
	if err != nil {
		return "", err
	}
	d := &net.Dialer{Timeout: 3 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
		&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}

// checkDeployedPermissions: the users of deploy/nats/accounts.conf have the
// permissions of the embedded server's (serverUsers).
func checkDeployedPermissions(t *testing.T, opts *server.Options) {
	t.Helper()
	want := map[string]*server.Permissions{bus.UserPBX: bus.PBXPermissions, bus.UserRecorder: bus.RecorderPermissions}
	found := 0
	for _, u := range opts.Users {
		p, ok := want[u.Username]
		if !ok {
			continue
		}
		found++
		if u.Account == nil || u.Account.Name != "MASKPBX" {
			t.Errorf("user %s is not in account MASKPBX", u.Username)
		}
		if !sameSubjects(u.Permissions.Publish, p.Publish) || !sameSubjects(u.Permissions.Subscribe, p.Subscribe) {
			t.Errorf("user %s: deploy/nats/accounts.conf grants publish %v subscribe %v; the embedded server %v and %v",
				u.Username, u.Permissions.Publish, u.Permissions.Subscribe, p.Publish, p.Subscribe)
		}
	}
	if found != 2 {
		t.Fatalf("deploy/nats/accounts.conf has %d of maskpbx's two users", found)
	}
}

func sameSubjects(a, b *server.SubjectPermission) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := slices.Clone(a.Allow), slices.Clone(b.Allow)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y) && len(a.Deny) == 0 && len(b.Deny) == 0
}

// writeTestPKI writes a CA and a certificate for 127.0.0.1 it signed (for
// both ends of a route) as ca.pem, server.pem and server-key.pem in
// dir/tls, and returns that directory.
func writeTestPKI(t *testing.T, dir string) string {
	t.Helper()
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "maskpbx test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	for name, block := range map[string]*pem.Block{
		"ca.pem": {Type: "CERTIFICATE", Bytes: caDER}, "server.pem": {Type: "CERTIFICATE", Bytes: der},
		"server-key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(tlsDir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return tlsDir
}
