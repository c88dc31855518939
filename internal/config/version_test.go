package config_test

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

func TestBuild_String(t *testing.T) {
	vcs, err := debug.ParseBuildInfo("go\tgo1.26.8\n" +
		"path\tgithub.com/jetstream-bridge/jetstream-bridge/cmd/relay\n" +
		"mod\tgithub.com/jetstream-bridge/jetstream-bridge\tv0.0.0-20260105100000-0123456789ab+dirty\t\n" +
		"build\tGOARCH=arm64\nbuild\tGOOS=linux\nbuild\tvcs=git\n" +
		"build\tvcs.revision=0123456789abcdef0123456789abcdef01234567\n" +
		"build\tvcs.time=2026-01-05T10:00:00Z\nbuild\tvcs.modified=true\n")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"from a git clone", vcs, "v0.0.0-20260105100000-0123456789ab+dirty, revision 0123456789abcdef0123456789abcdef01234567 " +
			"(2026-01-05T10:00:00Z, modified), go1.26.8 linux/arm64"},
		{"test binary", &debug.BuildInfo{GoVersion: "go1.26.8"},
			"(devel), revision unknown, go1.26.8 " + runtime.GOOS + "/" + runtime.GOARCH},
		{"no build info", nil, "(devel), revision unknown, " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := config.BuildFrom(tt.bi).String(); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
