package localenv_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// TestChooseBackend: local binaries win, a container is the fallback when
// a Docker engine answers, TEST_POSTGRES forces either, and with neither the
// error says how to get both.
func TestChooseBackend(t *testing.T) {
	missing := fmt.Errorf("%w: install them", localenv.ErrPostgresNotInstalled)
	noDocker := errors.New("cannot connect to the docker daemon")
	for _, tc := range []struct {
		force     string
		installed error
		docker    error
		want      localenv.Backend
		wantErr   string
		askDocker bool
	}{
		{"", nil, nil, localenv.BackendLocal, "", false},
		{"", nil, noDocker, localenv.BackendLocal, "", false},
		{"", missing, nil, localenv.BackendContainer, "", true},
		{"", missing, noDocker, "", "nor does a Docker engine answer", true},
		{"local", missing, nil, localenv.BackendLocal, "install them", false},
		{"local", nil, nil, localenv.BackendLocal, "", false},
		{"container", nil, nil, localenv.BackendContainer, "", true},
		{"container", nil, noDocker, "", "TEST_POSTGRES=container but no Docker engine answers", true},
		{"docker", nil, nil, "", `TEST_POSTGRES="docker"`, false},
	} {
		asked := false
		got, err := localenv.ChooseBackend(tc.force, tc.installed, func() error { asked = true; return tc.docker })
		name := fmt.Sprintf("force=%q installed=%v docker=%v", tc.force, tc.installed, tc.docker)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err=%v, want one containing %q", name, err, tc.wantErr)
			}
		} else if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", name, got, err, tc.want)
		}
		if asked != tc.askDocker {
			t.Errorf("%s: asked Docker=%v, want %v", name, asked, tc.askDocker)
		}
	}
	// The fallback keeps the install hint of the missing binaries.
	_, err := localenv.ChooseBackend("", missing, func() error { return noDocker })
	if !errors.Is(err, localenv.ErrPostgresNotInstalled) {
		t.Errorf("err=%v does not wrap ErrPostgresNotInstalled", err)
	}
}
