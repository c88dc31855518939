package config

import (
	"fmt"
	"strconv"
	"strings"
)

// MinNATSServer is the oldest nats-server the relay and the sink run
// against. Older servers refuse consumer settings the sink provisions (a
// BackOff list with MaxDeliver, as 2.9 does) or lack stream features the
// relay relies on; the binaries stop at connect rather than fail later with
// a raw API error. Newer servers add optional features: fast batch
// publishing needs 2.14.
var MinNATSServer = ServerVersion{Major: 2, Minor: 10, Patch: 0}

// ServerTooOldError means the connected nats-server is older than
// MinNATSServer.
type ServerTooOldError struct {
	Found string // as the server announced it
	Min   ServerVersion
}

func (e *ServerTooOldError) Error() string {
	return fmt.Sprintf("nats-server %s is too old: jetstream-bridge needs nats-server %s or newer", e.Found, e.Min)
}

// ServerVersion is a nats-server release number.
type ServerVersion struct {
	Major, Minor, Patch int
}

func (v ServerVersion) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// Less reports whether v is an older release than w.
func (v ServerVersion) Less(w ServerVersion) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// ParseServerVersion parses the version a nats-server announces ("2.10.29",
// "v2.11.0", "2.12.0-RC.3", "2.14.0-beta+build"). A pre-release or build
// suffix is ignored: a release candidate of 2.10.0 counts as 2.10.0, so
// the check never refuses a server for its suffix alone.
func ParseServerVersion(s string) (ServerVersion, error) {
	core := strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexAny(core, "-+"); i >= 0 {
		core = core[:i]
	}
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return ServerVersion{}, fmt.Errorf("parse nats-server version %q: expected MAJOR.MINOR.PATCH", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || strings.Trim(p, "0123456789") != "" {
			return ServerVersion{}, fmt.Errorf("parse nats-server version %q: expected MAJOR.MINOR.PATCH", s)
		}
		n[i] = v
	}
	return ServerVersion{Major: n[0], Minor: n[1], Patch: n[2]}, nil
}

// CheckServerVersion returns a *ServerTooOldError when
// version (as the server announces it) is older than MinNATSServer, and a
// parse error when it cannot be read: a server whose version is unknown
// cannot be said to support what the bridge needs.
func CheckServerVersion(version string) error {
	v, err := ParseServerVersion(version)
	if err != nil {
		return err
	}
	if v.Less(MinNATSServer) {
		return &ServerTooOldError{Found: strings.TrimSpace(version), Min: MinNATSServer}
	}
	return nil
}
