package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// CA certificate fields. All fixed, so that every holder of the cluster key
// builds the byte-identical certificate (Ed25519 signatures are
// deterministic). NB: changing any of them changes the CA DER; nodes of
// different releases then still verify each other (same key, same subject),
// but do not change them lightly.
const caCommonName = "vigil cluster CA"

var (
	caSerial    = big.NewInt(1)
	caNotBefore = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// RFC 5280 4.1.2.5: 99991231235959Z means "no well-defined expiration".
	caNotAfter = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// Leaf certificate validity. NotBefore is back-dated to tolerate clock skew
// between nodes.
const (
	leafValidity = 365 * 24 * time.Hour
	leafBackdate = time.Hour
)

// CA is the cluster certificate authority derived from the cluster key.
// Every node holds it and issues its own leaf certificate.
type CA struct {
	key  ed25519.PrivateKey
	cert *x509.Certificate
}

// NewCA derives the cluster CA from key: an Ed25519 key from
// Derive(key, "vigil ca v1", 32) and a self-signed certificate with fixed
// fields, identical byte for byte on every node.
func NewCA(key []byte) (*CA, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrKeySize, len(key), KeySize)
	}
	priv := ed25519.NewKeyFromSeed(Derive(key, PurposeCA, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: caCommonName},
		NotBefore:             caNotBefore,
		NotAfter:              caNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		// Set explicitly: the default key ID method has changed between Go
		// releases, and the DER must not depend on the toolchain.
		SubjectKeyId: keyID(pub),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{key: priv, cert: cert}, nil
}

// keyID is the first 160 bits of SHA-256 of the public key (RFC 7093, 2).
func keyID(pub ed25519.PublicKey) []byte {
	sum := sha256.Sum256(pub)
	return sum[:20]
}

// Certificate returns the CA certificate. Callers must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a new pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// IssueNode issues a leaf certificate for node name with a fresh Ed25519
// key: CN = name, SANs = hosts (IP or DNS; a ":port" suffix is stripped),
// usable as TLS server and client certificate, valid from an hour before now
// for a year.
func (ca *CA) IssueNode(name string, hosts []string, now time.Time) (tls.Certificate, error) {
	if name == "" {
		return tls.Certificate{}, errors.New("pki: issue node certificate: empty node name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		NotBefore:   now.Add(-leafBackdate),
		NotAfter:    now.Add(leafValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	seen := make(map[string]bool)
	for _, h := range hosts {
		h = stripPort(h)
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue node certificate: %w", err)
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(2)) // never the CA's serial
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue node certificate: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: issue node certificate %q: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: parse node certificate %q: %w", name, err)
	}
	return tls.Certificate{
		Certificate: [][]byte{der}, // peers hold the CA already
		PrivateKey:  priv,
		Leaf:        leaf,
	}, nil
}

// stripPort returns the host of "host:port", "[v6]:port" or "[v6]", and h
// itself when it has no port.
func stripPort(h string) string {
	h = strings.TrimSpace(h)
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}
