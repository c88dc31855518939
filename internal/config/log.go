package config

import (
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// NewLogger builds the process logger: JSON lines by default, a human console
// format with LOG_FORMAT=console.
func NewLogger(c *Common, w io.Writer, service string) zerolog.Logger {
	if w == nil {
		w = os.Stderr
	}
	if c.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(c.LogLevel))
	if err != nil || lvl == zerolog.NoLevel {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("service", service).Str("app", c.AppName).Logger()
}

// RedactNATSURL removes credentials from a NATS server URL so it can be
// logged: nats://user:pass@host becomes nats://user:xxxxx@host, and
// nats://token@host (a user name without a password is a token to NATS)
// becomes nats://xxxxx@host. url.URL.Redacted, and nats.go's
// ConnectedUrlRedacted, mask only a password and would print the token.
func RedactNATSURL(s string) string {
	scheme, rest := "", s
	if i := strings.Index(s, "://"); i >= 0 {
		scheme, rest = s[:i+3], s[i+3:]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return s
	}
	if user, _, hasPassword := strings.Cut(rest[:at], ":"); hasPassword {
		return scheme + user + ":xxxxx" + rest[at:]
	}
	return scheme + "xxxxx" + rest[at:]
}

// RedactNATSURLs applies RedactNATSURL to each URL.
func RedactNATSURLs(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = RedactNATSURL(u)
	}
	return out
}

var keyValuePassword = regexp.MustCompile(`(?i)(password|sslpassword|token)\s*=\s*('[^']*'|\S+)`)

// Redact removes passwords and tokens from a connection string (URL or
// key=value form) so it can be logged.
func Redact(conn string) string {
	if u, err := url.Parse(conn); err == nil && u.Scheme != "" && u.Host != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		for _, k := range []string{"password", "sslpassword", "token"} {
			if q.Has(k) {
				q.Set(k, "xxxxx")
			}
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	return keyValuePassword.ReplaceAllString(conn, "$1=xxxxx")
}
