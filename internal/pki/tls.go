package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
)

// ServerTLS returns the TLS configuration of a node's HTTPS listener (API and
// raft peer endpoint): TLS 1.3, cert as server certificate, and client
// certificates verified against the cluster CA when given. Clients without
// one (the CLI, which sends the API token) are let through the handshake;
// handlers that need a peer call PeerName.
func ServerTLS(ca *CA, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// ClientTLS returns the TLS configuration for dialing a node: TLS 1.3, the
// server's certificate chain verified against the cluster CA, and cert (if
// not nil) presented as client certificate.
//
// Server names: every node holds the CA key and can issue any name, so a
// name check adds no authentication beyond "holds the cluster key". With
// serverName empty, any certificate of the cluster is accepted, whatever
// address was dialed (addresses change, NAT, loopback aliases). With
// serverName set, the leaf must also carry it as its CN (the node name) or as
// a DNS or IP SAN; use it to make sure an address still belongs to the node
// one meant.
func ClientTLS(ca *CA, cert *tls.Certificate, serverName string) *tls.Config {
	pool := ca.Pool()
	c := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// NB: Go's own verification would check the dialed host against the
		// SANs; it is replaced by VerifyConnection below, which verifies the
		// chain against the CA and applies the serverName policy above.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(pool, serverName, cs)
		},
	}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// verifyServer checks the server's chain against pool and, if serverName is
// set, that the leaf names it.
func verifyServer(pool *x509.CertPool, serverName string, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("pki: server presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("pki: server certificate %q is not from this cluster's CA (another cluster key?): %w", leaf.Subject.CommonName, err)
	}
	if serverName == "" || leaf.Subject.CommonName == serverName {
		return nil
	}
	if err := leaf.VerifyHostname(serverName); err != nil {
		return fmt.Errorf("pki: server certificate of node %q does not name %q: %w", leaf.Subject.CommonName, serverName, err)
	}
	return nil
}

// PeerName returns the node name (CN) of the request's client certificate,
// and whether there is one that the TLS handshake verified against the
// cluster CA (see ServerTLS).
func PeerName(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", false
	}
	name := r.TLS.VerifiedChains[0][0].Subject.CommonName
	return name, name != ""
}
