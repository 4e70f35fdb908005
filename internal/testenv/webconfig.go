package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// WebConfig writes an exporter-toolkit web configuration file with user
// alice (password "secret") and, if withTLS, a self-signed certificate for
// 127.0.0.1 (cert.pem beside it). It returns the file's path and the
// certificate (nil without TLS).
func WebConfig(t testing.TB, withTLS bool) (path string, certPEM []byte) {
	t.Helper()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := "basic_auth_users:\n  alice: " + string(hash) + "\n"
	if withTLS {
		cert, key := SelfSigned(t, []string{"127.0.0.1"}, net.IPv4(127, 0, 0, 1))
		certPEM = cert
		for name, data := range map[string][]byte{"cert.pem": cert, "key.pem": key} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg += "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
	}
	path = filepath.Join(dir, "web.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, certPEM
}

// SelfSigned returns a self-signed ECDSA certificate and its key, PEM
// encoded, valid for an hour either side of now, for the given DNS names
// (the first is also the common name) and IP addresses.
func SelfSigned(t testing.TB, names []string, ips ...net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// WriteSelfSigned writes SelfSigned(names) to DIR/NAME.crt and DIR/NAME.key
// (NAME the first name) and returns the two paths.
func WriteSelfSigned(t testing.TB, dir string, names ...string) (cert, key string) {
	t.Helper()
	c, k := SelfSigned(t, names)
	cert, key = filepath.Join(dir, names[0]+".crt"), filepath.Join(dir, names[0]+".key")
	if err := os.WriteFile(cert, c, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}
