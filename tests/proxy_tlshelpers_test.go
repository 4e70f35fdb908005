package tests

import (
	"testing"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// proxyCert writes a self-signed certificate for name into dir and returns
// the paths of the certificate and key.
func proxyCert(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	return testenv.WriteSelfSigned(t, dir, name)
}
