package pbx

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// serverTLS is a TLS configuration with a throwaway self-signed
// certificate for the PBX's address.
func serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: testDomain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP(pbxHost)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// Phones on TCP and TLS keep their NAT bindings alive: an RFC 5626 phone
// registering with reg-id is told the flow is kept (Require: outbound,
// Flow-Timer) and its CRLF keep-alives are answered on the connection. Over
// UDP, where the PBX answers no STUN keep-alive, it is told nothing.
func TestFlowKeepAlive(t *testing.T) {
	e := startPBX(t, func(c *Config) { c.TLSListen, c.TLS = pbxHost+":0", serverTLS(t) })
	outbound := []string{"Supported: path, outbound",
		`Contact: <sip:alice@` + phoneHost + `;ob>;reg-id=1;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"`}

	for _, p := range []*phone{e.newStreamPhone(t, nil), e.newStreamPhone(t, &tls.Config{InsecureSkipVerify: true})} {
		t.Run(p.transport, func(t *testing.T) {
			p.t = t
			res := p.register("alice", alicePass, "MD5", outbound...)
			if res.StatusCode != 200 {
				t.Fatalf("REGISTER over %s: %d", p.transport, res.StatusCode)
			}
			if h := res.GetHeader("Require"); h == nil || h.Value() != "outbound" {
				t.Errorf("200 lacks Require: outbound: %v", h)
			}
			if h := res.GetHeader("Flow-Timer"); h == nil || h.Value() != "120" {
				t.Errorf("200 lacks Flow-Timer: 120: %v", h)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			regs, err := e.regs.Contacts(ctx, aliceID)
			found := false
			for _, r := range regs {
				found = found || r.Transport == p.transport && r.Source == p.local()
			}
			if err != nil || !found {
				t.Errorf("no %s binding from %s in %+v (%v)", p.transport, p.local(), regs, err)
			}

			for range 2 {
				if _, err := p.conn.Write([]byte("\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
				pong := make([]byte, 2)
				_ = p.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
				if _, err := io.ReadFull(p.conn, pong); err != nil || string(pong) != "\r\n" {
					t.Fatalf("keep-alive over %s: got %q, %v; want a CRLF", p.transport, pong, err)
				}
			}
		})
	}

	res := e.newPhone(t).register("alice", alicePass, "MD5", outbound...)
	if res.StatusCode != 200 || res.GetHeader("Flow-Timer") != nil || res.GetHeader("Require") != nil {
		t.Errorf("over UDP: %d, Flow-Timer %v, Require %v; want 200 without them", res.StatusCode, res.GetHeader("Flow-Timer"), res.GetHeader("Require"))
	}
}
