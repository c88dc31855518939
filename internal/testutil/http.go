package testutil

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// FreeAddr returns a free 127.0.0.1:port for a process's HTTP_ADDR. The port
// is released before returning, so a process started right after gets it.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := localenv.FreeAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// HTTPGet fetches url and returns the status code and body; an error
// becomes status 0 and the error text, so it can be retried in Eventually.
func HTTPGet(url string) (int, string) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}
