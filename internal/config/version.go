package config

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Build identifies a binary: what `version` prints, the start-up log line
// carries and the *_build_info gauge is labelled with, so an operator can
// tell which build a process runs.
//
// It comes from the information the Go toolchain embeds in every binary:
// the module version is a tag or a pseudo-version when built from a tagged
// or committed checkout, "(devel)" otherwise; the revision is there only
// when the build could ask the version control system (a `go build` inside a
// git clone with -buildvcs=auto or true; not `go test` binaries, nor builds
// from a tarball or a git worktree).
type Build struct {
	Version   string // module version, "(devel)" when unknown
	Revision  string // VCS revision, "unknown" when not embedded
	Time      string // commit time (RFC 3339), "" when not embedded
	Modified  bool   // built from a checkout with uncommitted changes
	GoVersion string // toolchain, e.g. go1.26.8
	Platform  string // GOOS/GOARCH
}

// ReadBuild reads the running binary's build information.
func ReadBuild() Build {
	bi, _ := debug.ReadBuildInfo()
	return BuildFrom(bi)
}

// BuildFrom extracts a Build from bi, filling what is missing (bi may be nil)
// with "(devel)", "unknown" and the running toolchain.
func BuildFrom(bi *debug.BuildInfo) Build {
	b := Build{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return b
	}
	if v := bi.Main.Version; v != "" {
		b.Version = v
	}
	if bi.GoVersion != "" {
		b.GoVersion = bi.GoVersion
	}
	var goos, goarch string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if s.Value != "" {
				b.Revision = s.Value
			}
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	if goos != "" && goarch != "" {
		b.Platform = goos + "/" + goarch
	}
	return b
}

// String is the one-line form, e.g.
// "v1.2.0, revision 3f2a…c1 (2026-01-05T10:00:00Z), go1.26.8 linux/amd64"; a
// build from a checkout with uncommitted changes says "modified".
func (b Build) String() string {
	var s strings.Builder
	s.WriteString(b.Version)
	s.WriteString(", revision ")
	s.WriteString(b.Revision)
	var notes []string
	if b.Time != "" {
		notes = append(notes, b.Time)
	}
	if b.Modified {
		notes = append(notes, "modified")
	}
	if len(notes) > 0 {
		s.WriteString(" (" + strings.Join(notes, ", ") + ")")
	}
	s.WriteString(", " + b.GoVersion + " " + b.Platform)
	return s.String()
}
