package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"30s", 30 * time.Second, false},
		{"2m", 2 * time.Minute, false},
		{"45", 45 * time.Second, false},
		{" 5 ", 5 * time.Second, false},
		{"0", 0, false},
		{"1h30m", 90 * time.Minute, false},
		{"", 0, true},
		{"-5", 0, true},
		{"-1s", 0, true},
		{"soon", 0, true},
		{"99999999999999999999", 0, true},
	} {
		got, err := config.ParseDuration(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

type testConfig struct {
	config.Common
	Window  time.Duration   `env:"WINDOW" envDefault:"2m" help:"a window"`
	Backoff []time.Duration `env:"BACKOFF" envDefault:"1s,5s" envSeparator:","`
	Count   int             `env:"COUNT" envDefault:"3"`
}

func (c *testConfig) Validate() error { return c.Common.Validate() }

func TestLoadNamesTheVariable(t *testing.T) {
	var c testConfig
	err := config.Load(&c, map[string]string{"WINDOW": "forever", "COUNT": "many", "BACKOFF": "1s,x", "AUTO_PROVISION": "maybe"})
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, want := range []string{`WINDOW="forever"`, "duration", `COUNT="many"`, "whole number", "BACKOFF", `AUTO_PROVISION="maybe"`,
		"true or false", "DATABASE_URL is required", "APP_NAME is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestLoadDefaultsAndBareSeconds(t *testing.T) {
	var c testConfig
	if err := config.Load(&c, map[string]string{"DATABASE_URL": "postgres://x@h/db", "APP_NAME": "a", "WINDOW": "90", "BACKOFF": "1,2m"}); err != nil {
		t.Fatal(err)
	}
	if c.Window != 90*time.Second || len(c.Backoff) != 2 || c.Backoff[1] != 2*time.Minute || c.Count != 3 ||
		c.StreamName != "jetstream-bridge-stream" || !c.AutoProvision || c.NATSURLs[0] != "nats://127.0.0.1:4222" {
		t.Fatalf("config = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestCommonValidate(t *testing.T) {
	c := config.Common{DatabaseURL: "nope", NATSURLs: []string{"nats://a b"}, LogLevel: "loud", LogFormat: "xml",
		NATSTLSCert: "c", NATSPassword: "p"}
	err := c.Validate()
	for _, want := range []string{"DATABASE_URL", "NATS_URLS", "LOG_LEVEL", "LOG_FORMAT", "NATS_TLS_KEY", "NATS_USER"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation does not name %s: %v", want, err)
		}
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var b strings.Builder
	config.Usage(&b, &testConfig{})
	for _, want := range []string{"DATABASE_URL", "(required)", "NATS_URLS", "WINDOW", "2m", "a window", "BACKOFF", "COUNT"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, leak := range map[string]string{
		"postgres://user:s3cret@db:5432/app?sslmode=require": "s3cret",
		"postgres://user@db/app?password=s3cret":             "s3cret",
		"host=db user=u password=s3cret dbname=app":          "s3cret",
		"host=db user=u password='s3 cret' dbname=app":       "s3 cret",
		"postgresql://u:p%40ss@db/app":                       "p%40ss",
		"nats://user:s3cret@nats:4222":                       "s3cret",
	} {
		out := config.Redact(in)
		if strings.Contains(out, leak) {
			t.Errorf("Redact(%q) = %q still holds the secret", in, out)
		}
	}
	if got := config.Redact("postgres://u@db/app"); got != "postgres://u@db/app" {
		t.Errorf("Redact changed a URL without secrets: %q", got)
	}
}

func TestRedactNATSURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://user:pw@host:4222": "nats://user:xxxxx@host:4222",
		"nats://s3cr3ttoken@host":  "nats://xxxxx@host",
		"tls://a:b@c@host:4443":    "tls://a:xxxxx@host:4443",
		"nats://host:4222":         "nats://host:4222",
		"host:4222":                "host:4222",
	} {
		if got := config.RedactNATSURL(in); got != want {
			t.Errorf("RedactNATSURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"30s", "2m", "45", "", "-5", "1h30m", "9223372036854775807", "1e9", " 7 ", "0x10", "1µs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := config.ParseDuration(s)
		if err == nil && d < 0 {
			t.Fatalf("ParseDuration(%q) = %v: negative accepted", s, d)
		}
		if err != nil && d != 0 {
			t.Fatalf("ParseDuration(%q) returned %v with error %v", s, d, err)
		}
	})
}
