package redistest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TLSFiles are PEM files of a throwaway certificate authority, a server
// certificate it signed and a client certificate it signed, in a test's
// temporary directory.
type TLSFiles struct {
	CAFile, ServerCertFile, ServerKeyFile, ClientCertFile, ClientKeyFile string
}

// NewTLSFiles makes a CA and a server certificate valid for names (IP
// addresses or DNS names), plus a client certificate, all for one hour.
func NewTLSFiles(t testing.TB, names ...string) *TLSFiles {
	t.Helper()
	dir := t.TempDir()
	f := &TLSFiles{
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
	}
	caKey := newKey(t)
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistest CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("create CA certificate: %v", err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatalf("parse CA certificate: %v", err)
	}
	writePEM(t, f.CAFile, "CERTIFICATE", caDER)

	server := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "redistest server"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else {
			server.DNSNames = append(server.DNSNames, n)
		}
	}
	issue(t, server, ca, caKey, f.ServerCertFile, f.ServerKeyFile)

	client := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "redistest client"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	issue(t, client, ca, caKey, f.ClientCertFile, f.ClientKeyFile)
	return f
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return k
}

func issue(t testing.TB, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatalf("create certificate %s: %v", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// ClientConfig is a TLS configuration that trusts the CA and presents the
// client certificate; serverName is the name to verify (empty ⇒ 127.0.0.1).
func (f *TLSFiles) ClientConfig(t testing.TB, serverName string) *tls.Config {
	t.Helper()
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		t.Fatalf("read CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(f.ClientCertFile, f.ClientKeyFile)
	if err != nil {
		t.Fatalf("load client certificate: %v", err)
	}
	if serverName == "" {
		serverName = "127.0.0.1"
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

// StartTLSServer runs a redis-server that listens only on a TLS port
// (plain port 0) with the server certificate of f, and waits until it
// answers. Client certificates are optional unless args say
// "--tls-auth-clients", "yes".
func StartTLSServer(t testing.TB, f *TLSFiles, args ...string) *Server {
	t.Helper()
	s := newTLSServer(t, f, args)
	s.launch(t)
	return s
}

// newTLSServer is newServer listening on TLS only with f's certificates.
func newTLSServer(t testing.TB, f *TLSFiles, args []string) *Server {
	t.Helper()
	s := newServer(t, args)
	_, port, _ := net.SplitHostPort(s.Addr)
	s.listenArgs = []string{
		"--port", "0",
		"--tls-port", port,
		"--tls-cert-file", f.ServerCertFile,
		"--tls-key-file", f.ServerKeyFile,
		"--tls-ca-cert-file", f.CAFile,
		"--tls-auth-clients", "optional",
	}
	probe := f.ClientConfig(t, "")
	probe.InsecureSkipVerify = true // a readiness probe only: the names are the tests' business
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 200 * time.Millisecond}, Config: probe}
	s.dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", s.Addr) }
	return s
}

// TLSURL returns the rediss:// URL of a server started by StartTLSServer,
// with userinfo ("user:password", or "") in it.
func (s *Server) TLSURL(userinfo string) string {
	if userinfo != "" {
		userinfo += "@"
	}
	return "rediss://" + userinfo + s.Addr + "/0"
}

// TLSClient returns a go-redis client that speaks TLS with cfg, closed
// when the test ends.
func (s *Server) TLSClient(t testing.TB, cfg *tls.Config, username, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, TLSConfig: cfg, Username: username, Password: password})
	t.Cleanup(func() { c.Close() })
	return c
}
