package pki

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustCA(t *testing.T, key []byte) *CA {
	t.Helper()
	ca, err := NewCA(key)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, name string, hosts ...string) tls.Certificate {
	t.Helper()
	c, err := ca.IssueNode(name, hosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCAIdenticalOnEveryNode: every holder of the key builds the same CA,
// byte for byte, so that no CA certificate needs distributing.
func TestCAIdenticalOnEveryNode(t *testing.T) {
	key := testKey(1)
	a, b := mustCA(t, key), mustCA(t, bytes.Clone(key))
	if !bytes.Equal(a.Certificate().Raw, b.Certificate().Raw) {
		t.Fatal("two NewCA calls with one key give different certificates")
	}
	// Pinned: a change means nodes of different releases build different CA
	// certificates. They would still verify each other (same key and
	// subject), but it must be a decision, not an accident.
	sum := sha256.Sum256(a.Certificate().Raw)
	if got, want := hex.EncodeToString(sum[:]), "25fdfd4473ad7c5196b5d7ce59fce92e87328f19b37993a9e36ae2149b71a5f9"; got != want {
		t.Errorf("CA certificate SHA-256 = %s, want %s", got, want)
	}
	c := mustCA(t, testKey(2))
	if bytes.Equal(a.Certificate().Raw, c.Certificate().Raw) {
		t.Error("two keys give the same CA certificate")
	}

	cert := a.Certificate()
	if !cert.IsCA || cert.Subject.CommonName != "vigil cluster CA" || cert.SerialNumber.Int64() != 1 {
		t.Errorf("CA cert: IsCA=%v CN=%q serial=%v", cert.IsCA, cert.Subject.CommonName, cert.SerialNumber)
	}
	if cert.PublicKeyAlgorithm != x509.Ed25519 {
		t.Errorf("CA key algorithm %v, want Ed25519", cert.PublicKeyAlgorithm)
	}
	want := ed25519.NewKeyFromSeed(Derive(key, PurposeCA, 32)).Public().(ed25519.PublicKey)
	if !want.Equal(cert.PublicKey) {
		t.Error("CA public key is not the one derived for purpose \"vigil ca v1\"")
	}
	if _, err := NewCA(key[:16]); err == nil {
		t.Error("NewCA accepted a 16-byte key")
	}
}

func TestIssueNode(t *testing.T) {
	ca := mustCA(t, testKey(1))
	c, err := ca.IssueNode("n1", []string{"10.0.0.1:7000", "[fd00::1]:7000", "node1.example:7000", "10.0.0.1", "::1", "localhost"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if leaf.Subject.CommonName != "n1" {
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"10.0.0.1", "fd00::1", "::1"}; !slices.Equal(ips, want) {
		t.Errorf("IP SANs = %v, want %v", ips, want)
	}
	if want := []string{"node1.example", "localhost"}; !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("DNS SANs = %v, want %v", leaf.DNSNames, want)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("ExtKeyUsage = %v, want server and client auth", leaf.ExtKeyUsage)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if !leaf.NotBefore.Before(testNow) || leaf.NotAfter.Before(testNow.Add(364*24*time.Hour)) {
		t.Errorf("validity %v .. %v around %v", leaf.NotBefore, leaf.NotAfter, testNow)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("leaf does not verify for %v: %v", usage, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: mustCA(t, testKey(2)).Pool(), CurrentTime: testNow}); err == nil {
		t.Error("leaf verifies against another key's CA")
	}
	// Fresh key per issue.
	c2, _ := ca.IssueNode("n1", nil, testNow)
	if bytes.Equal(c2.Leaf.RawSubjectPublicKeyInfo, leaf.RawSubjectPublicKeyInfo) || c2.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two issues share a key or serial")
	}
	if _, err := ca.IssueNode("", nil, testNow); err == nil {
		t.Error("IssueNode accepted an empty name")
	}
}

// peerEcho is a handler that answers with PeerName.
var peerEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	name, ok := PeerName(r)
	if !ok {
		io.WriteString(w, "anonymous")
		return
	}
	io.WriteString(w, "peer "+name)
})

func startServer(t *testing.T, ca *CA, cert tls.Certificate) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(peerEcho)
	srv.EnableHTTP2 = true
	srv.TLS = ServerTLS(ca, cert)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, conf *tls.Config, url string) (string, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestTLSSeparatesClusters: a node of cluster A and a client of cluster B do
// not talk, whichever side checks first.
func TestTLSSeparatesClusters(t *testing.T) {
	caA, caB := mustCA(t, testKey(1)), mustCA(t, testKey(2))
	srv := startServer(t, caA, mustIssue(t, caA, "a1", "127.0.0.1"))
	certA := mustIssue(t, caA, "a2", "127.0.0.1")
	certB := mustIssue(t, caB, "b1", "127.0.0.1")

	tests := []struct {
		name    string
		conf    *tls.Config
		want    string // body, if the request should succeed
		wantErr string // else a substring of the error ("-": any error)
	}{
		{"same cluster, peer", ClientTLS(caA, &certA, ""), "peer a2", ""},
		{"same cluster, CLI without cert", ClientTLS(caA, nil, ""), "anonymous", ""},
		{"same cluster, CN as server name", ClientTLS(caA, nil, "a1"), "anonymous", ""},
		{"same cluster, IP SAN as server name", ClientTLS(caA, nil, "127.0.0.1"), "anonymous", ""},
		{"same cluster, wrong server name", ClientTLS(caA, nil, "a9"), "", "does not name"},
		{"client trusts another key's CA", ClientTLS(caB, &certB, ""), "", "not from this cluster's CA"},
		{"client trusts another key's CA, no cert", ClientTLS(caB, nil, ""), "", "not from this cluster's CA"},
		// The client trusts A but presents B's leaf: the server refuses the
		// handshake. In TLS 1.3 the client sees the alert only on its first
		// read, so the error text varies.
		{"client cert from another key", ClientTLS(caA, &certB, ""), "", "-"},
	}
	for i, tt := range tests {
		body, err := get(t, tt.conf, srv.URL)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%d (%s): %v", i, tt.name, err)
		case tt.wantErr == "" && body != tt.want:
			t.Errorf("%d (%s): body %q, want %q", i, tt.name, body, tt.want)
		case tt.wantErr != "" && err == nil:
			t.Errorf("%d (%s): connected (body %q), want refusal", i, tt.name, body)
		case tt.wantErr != "" && tt.wantErr != "-" && !strings.Contains(err.Error(), tt.wantErr):
			t.Errorf("%d (%s): err %v, want it to mention %q", i, tt.name, err, tt.wantErr)
		}
	}
}

func TestTLSVersion(t *testing.T) {
	ca := mustCA(t, testKey(1))
	srv := startServer(t, ca, mustIssue(t, ca, "a1", "127.0.0.1"))
	conf := ClientTLS(ca, nil, "")
	conf.MinVersion, conf.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if _, err := get(t, conf, srv.URL); err == nil {
		t.Error("server accepted TLS 1.2")
	}
	conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), ClientTLS(ca, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", v)
	}
}

func TestStripPort(t *testing.T) {
	for i, tt := range []struct{ in, want string }{
		{"10.0.0.1:7000", "10.0.0.1"},
		{"10.0.0.1", "10.0.0.1"},
		{"[fd00::1]:7000", "fd00::1"},
		{"[fd00::1]", "fd00::1"},
		{"fd00::1", "fd00::1"},
		{"host:1", "host"},
		{" host ", "host"},
	} {
		if got := stripPort(tt.in); got != tt.want {
			t.Errorf("%d: stripPort(%q) = %q, want %q", i, tt.in, got, tt.want)
		}
	}
}
