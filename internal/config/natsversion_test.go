package config_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestParseServerVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want config.ServerVersion
		err  bool
	}{
		{"2.10.29", config.ServerVersion{Major: 2, Minor: 10, Patch: 29}, false},
		{"v2.11.0", config.ServerVersion{Major: 2, Minor: 11}, false},
		{" 2.9.25 ", config.ServerVersion{Major: 2, Minor: 9, Patch: 25}, false},
		{"2.12.0-RC.3", config.ServerVersion{Major: 2, Minor: 12}, false},
		{"2.14.0-beta", config.ServerVersion{Major: 2, Minor: 14}, false},
		{"2.10.0-beta.2+build.5", config.ServerVersion{Major: 2, Minor: 10}, false},
		{"3.0.0+dev", config.ServerVersion{Major: 3}, false},
		{"", config.ServerVersion{}, true},
		{"2.10", config.ServerVersion{}, true},
		{"2.10.1.4", config.ServerVersion{}, true},
		{"2.x.0", config.ServerVersion{}, true},
		{"2.+10.0", config.ServerVersion{}, true},
		{"2..0", config.ServerVersion{}, true},
		{"dev", config.ServerVersion{}, true},
	} {
		got, err := config.ParseServerVersion(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseServerVersion(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestCheckServerVersion(t *testing.T) {
	for _, tc := range []struct {
		in      string
		tooOld  bool
		invalid bool
	}{
		{"2.10.0", false, false},
		{"2.10.29", false, false},
		{"2.10.0-RC.1", false, false}, // a suffix alone never refuses a server
		{"2.11.0", false, false},
		{"2.15.2", false, false},
		{"3.0.0", false, false},
		{"2.9.25", true, false},
		{"2.9.99-beta", true, false},
		{"2.2.0", true, false},
		{"1.99.99", true, false},
		{"0.0.0", true, false},
		{"", false, true}, // not connected, or a server that announces no version
		{"unknown", false, true},
	} {
		err := config.CheckServerVersion(tc.in)
		switch {
		case tc.tooOld:
			var tooOld *config.ServerTooOldError
			if !errors.As(err, &tooOld) {
				t.Errorf("CheckServerVersion(%q) = %v, want a ServerTooOldError", tc.in, err)
				continue
			}
			// The message names what was found and what is needed.
			if msg, want := err.Error(), "nats-server "+strings.TrimSpace(tc.in)+" is too old: jetstream-bridge needs nats-server 2.10.0 or newer"; msg != want {
				t.Errorf("CheckServerVersion(%q) = %q, want %q", tc.in, msg, want)
			}
		case tc.invalid:
			var tooOld *config.ServerTooOldError
			if err == nil || errors.As(err, &tooOld) {
				t.Errorf("CheckServerVersion(%q) = %v, want a parse error", tc.in, err)
			}
		default:
			if err != nil {
				t.Errorf("CheckServerVersion(%q) = %v, want nil", tc.in, err)
			}
		}
	}
}

func TestServerVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b config.ServerVersion
		less bool
	}{
		{config.ServerVersion{2, 9, 25}, config.ServerVersion{2, 10, 0}, true},
		{config.ServerVersion{2, 10, 0}, config.ServerVersion{2, 10, 0}, false},
		{config.ServerVersion{2, 10, 1}, config.ServerVersion{2, 10, 0}, false},
		{config.ServerVersion{1, 99, 99}, config.ServerVersion{2, 0, 0}, true},
		{config.ServerVersion{2, 10, 0}, config.ServerVersion{2, 10, 1}, true},
		{config.ServerVersion{3, 0, 0}, config.ServerVersion{2, 99, 0}, false},
	} {
		if got := tc.a.Less(tc.b); got != tc.less {
			t.Errorf("%v.Less(%v) = %v, want %v", tc.a, tc.b, got, tc.less)
		}
	}
}

// TestConnectNATS_ServerVersion: ConnectNATS, which both binaries and all
// their commands connect through, refuses nats-server 2.9 at once (no
// retries) with a ServerTooOldError, and connects to the oldest supported
// release.
func TestConnectNATS_ServerVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version string
		tooOld  bool
	}{
		{"2.9.25", true},
		{testutil.OldestNATSServer, false},
	} {
		t.Run(tc.version, func(t *testing.T) {
			t.Parallel()
			srv := testutil.StartNATSServerBinary(t, tc.version)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			nc, err := config.ConnectNATS(ctx, &config.Common{NATSURLs: []string{srv.URL}}, "test", zerolog.Nop())
			if !tc.tooOld {
				if err != nil {
					t.Fatalf("connect to nats-server %s: %v", tc.version, err)
				}
				nc.Close()
				return
			}
			var tooOld *config.ServerTooOldError
			if !errors.As(err, &tooOld) || tooOld.Found != tc.version {
				t.Fatalf("connect to nats-server %s: %v, want a ServerTooOldError naming it", tc.version, err)
			}
			if ctx.Err() != nil {
				t.Fatal("ConnectNATS retried until its context ended instead of refusing at once")
			}
		})
	}
}
