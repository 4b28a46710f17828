package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The self-signed SIP TLS pair generated into the data dir when no
// certificate is configured.
const (
	selfSignedCert = "sip-tls-cert.pem"
	selfSignedKey  = "sip-tls-key.pem"
)

// sipTLS returns the TLS listen address and configuration of the SIP
// server, or "" and nil when TLS is off.
func sipTLS(cfg Config, publicAddr string, logger *zap.Logger) (string, *tls.Config, error) {
	if !cfg.tlsEnabled() {
		return "", nil, nil
	}
	if _, _, err := net.SplitHostPort(cfg.SIPTLSListen); err != nil {
		return "", nil, fmt.Errorf("--sip-tls-listen: %w", err)
	}
	certFile, keyFile := cfg.SIPTLSCert, cfg.SIPTLSKey
	switch {
	case (certFile == "") != (keyFile == ""):
		return "", nil, errors.New("--sip-tls-cert and --sip-tls-key go together")
	case certFile == "":
		certFile, keyFile = filepath.Join(cfg.DataDir, selfSignedCert), filepath.Join(cfg.DataDir, selfSignedKey)
		created, err := ensureSelfSigned(certFile, keyFile, publicAddr, cfg.SIPDomain)
		if err != nil {
			return "", nil, fmt.Errorf("sip tls: %w", err)
		}
		if created {
			logger.Info("generated a self-signed SIP TLS certificate", zap.String("cert", certFile))
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return "", nil, fmt.Errorf("sip tls: %w", err)
	}
	sum := sha256.Sum256(pair.Certificate[0])
	logger.Info("sip tls certificate", zap.String("cert", certFile),
		zap.String("sha256_fingerprint", strings.ToUpper(hex.EncodeToString(sum[:]))))
	return cfg.SIPTLSListen, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// tlsEnabled reports whether --sip-tls-listen asks for a TLS listener.
func (c Config) tlsEnabled() bool {
	return c.SIPTLSListen != "" && !strings.EqualFold(c.SIPTLSListen, "off")
}

// ensureSelfSigned writes a self-signed ECDSA certificate for the PBX's
// address and SIP domain unless both files exist; it reports whether it
// wrote them.
func ensureSelfSigned(certFile, keyFile, publicAddr, domain string) (bool, error) {
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	if certErr == nil && keyErr == nil {
		return false, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: domain, Organization: []string{"maskpbx"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{domain},
	}
	if ip := net.ParseIP(publicAddr); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return false, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return false, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return false, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return false, err
	}
	return true, nil
}
