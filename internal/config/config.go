// Package config loads and validates the environment configuration shared by
// the relay and the sink, and builds what every binary needs from it: a
// logger, a NATS connection and the gem-compatible names.
//
// It does not know about replication or consuming; each binary embeds Common
// in its own Config and adds its own variables and checks.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"
)

// Common holds the variables both binaries read.
type Common struct {
	DatabaseURL     string   `env:"DATABASE_URL,required" help:"Postgres connection URL (sslmode and other libpq parameters accepted)"`
	NATSURLs        []string `env:"NATS_URLS" envDefault:"nats://127.0.0.1:4222" envSeparator:"," help:"comma-separated NATS server URLs"`
	NATSCreds       string   `env:"NATS_CREDS" help:"path to a NATS .creds file (JWT + nkey)"`
	NATSNKeySeed    string   `env:"NATS_NKEY_SEED" help:"path to an nkey seed file"`
	NATSUser        string   `env:"NATS_USER" help:"NATS user name"`
	NATSPassword    string   `env:"NATS_PASSWORD" help:"NATS password"`
	NATSToken       string   `env:"NATS_TOKEN" help:"NATS token"`
	NATSTLSCA       string   `env:"NATS_TLS_CA" help:"path to a CA certificate for the NATS TLS connection"`
	NATSTLSCert     string   `env:"NATS_TLS_CERT" help:"path to a client certificate (with NATS_TLS_KEY)"`
	NATSTLSKey      string   `env:"NATS_TLS_KEY" help:"path to the client certificate key"`
	AppName         string   `env:"APP_NAME,required" help:"this application's name, the first subject token"`
	DestinationApp  string   `env:"DESTINATION_APP" help:"the other side's application name"`
	EnvName         string   `env:"ENV_NAME" help:"optional prefix token for every subject (e.g. production)"`
	StreamName      string   `env:"JETSTREAM_STREAM_NAME" envDefault:"jetstream-bridge-stream" help:"JetStream stream name"`
	StreamRetention string   `env:"STREAM_RETENTION" envDefault:"limits" help:"limits | workqueue: retention when this process creates the stream (an existing stream keeps its own; the Ruby gem creates workqueue)"`
	AutoProvision   bool     `env:"AUTO_PROVISION" envDefault:"true" help:"create/update schema, slot, stream and consumer at start; false = no management calls at runtime"`
	UseDLQ          bool     `env:"USE_DLQ" envDefault:"true" help:"dead-letter failed messages to {app}.sync.dlq"`
	LogLevel        string   `env:"LOG_LEVEL" envDefault:"info" help:"debug | info | warn | error"`
	LogFormat       string   `env:"LOG_FORMAT" envDefault:"json" help:"json | console"`
	HTTPAddr        string   `env:"HTTP_ADDR" help:"address for /healthz, /readyz and /metrics (e.g. :8080); empty disables"`
	Pprof           bool     `env:"PPROF" envDefault:"false" help:"also serve Go profiles at /debug/pprof/ on HTTP_ADDR (diagnosis; keep HTTP_ADDR private)"`
}

// Validate checks the common variables. Messages name the variable and the
// accepted form.
func (c *Common) Validate() error {
	var errs []error
	if len(c.NATSURLs) == 0 {
		errs = append(errs, errors.New("NATS_URLS: at least one URL is required, e.g. nats://127.0.0.1:4222"))
	}
	for _, u := range c.NATSURLs {
		u = strings.TrimSpace(u)
		if u == "" || strings.ContainsAny(u, " \t") {
			errs = append(errs, fmt.Errorf("NATS_URLS: %q is not a URL; use nats://host:4222 (comma-separated)", RedactNATSURL(u)))
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "trace", "debug", "info", "warn", "warning", "error":
	default:
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %q is not one of debug, info, warn, error", c.LogLevel))
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("LOG_FORMAT: %q is not json or console", c.LogFormat))
	}
	if _, err := c.Retention(); err != nil {
		errs = append(errs, err)
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		errs = append(errs, errors.New("NATS_TLS_CERT and NATS_TLS_KEY must be set together"))
	}
	if c.NATSUser == "" && c.NATSPassword != "" {
		errs = append(errs, errors.New("NATS_PASSWORD is set without NATS_USER"))
	}
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") &&
		!strings.Contains(c.DatabaseURL, "=") {
		errs = append(errs, errors.New("DATABASE_URL: expected postgres://user:pass@host:5432/db or a key=value connection string"))
	} else if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
		// Parsed here, not first when connecting, so a bad port or sslmode
		// is a configuration error like any other (the message hides the password).
		errs = append(errs, fmt.Errorf("DATABASE_URL: %w", err))
	}
	return errors.Join(errs...)
}

// Retention is STREAM_RETENTION as a JetStream retention policy.
func (c *Common) Retention() (jetstream.RetentionPolicy, error) {
	switch c.StreamRetention {
	case "limits", "":
		return jetstream.LimitsPolicy, nil
	case "workqueue":
		return jetstream.WorkQueuePolicy, nil
	}
	return 0, fmt.Errorf("STREAM_RETENTION: %q is not limits or workqueue", c.StreamRetention)
}

// Load fills cfg (a pointer to a struct with env tags) from environ (nil means
// the process environment). Errors name the variable and the value's accepted form.
func Load(cfg any, environ map[string]string) error {
	if environ == nil {
		environ = env.ToMap(os.Environ())
	}
	opts := env.Options{
		Environment: environ,
		FuncMap: map[reflect.Type]env.ParserFunc{
			reflect.TypeOf(time.Duration(0)): func(v string) (any, error) { return ParseDuration(v) },
		},
	}
	err := env.ParseWithOptions(cfg, opts)
	if err == nil {
		return nil
	}
	keys := fieldKeys(reflect.TypeOf(cfg).Elem())
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		var unset env.VarIsNotSetError
		var empty env.EmptyVarError
		switch {
		case errors.As(e, &pe):
			key := keys[pe.Name]
			out = append(out, fmt.Errorf("%s=%q: %s", key, environ[key], acceptedForm(pe.Type, pe.Err)))
		case errors.As(e, &unset):
			out = append(out, fmt.Errorf("%s is required and not set", unset.Key))
		case errors.As(e, &empty):
			out = append(out, fmt.Errorf("%s is required and empty", empty.Key))
		default:
			out = append(out, e)
		}
	}
	return errors.Join(out...)
}

func acceptedForm(t reflect.Type, err error) string {
	switch t {
	case reflect.TypeOf(time.Duration(0)), reflect.TypeOf([]time.Duration(nil)):
		return "expected a duration such as 30s, 2m, 1h or a whole number of seconds"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "expected true or false"
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "expected a whole number"
	}
	return err.Error()
}

// fieldKeys maps struct field names (as env.ParseError reports them) to their
// variable names, descending into embedded and nested structs.
func fieldKeys(t reflect.Type) map[string]string {
	m := map[string]string{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") == "" {
			for k, v := range fieldKeys(f.Type) {
				m[k] = v
			}
			continue
		}
		if key, _, _ := strings.Cut(f.Tag.Get("env"), ","); key != "" {
			m[f.Name] = key
		}
	}
	return m
}

// ParseDuration accepts Go durations ("30s", "2m") and bare integers as seconds,
// as the gem did. Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > int64(time.Duration(1<<62)/time.Second) {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

// Usage writes every variable of cfg (a pointer to a config struct) with its
// default and description.
func Usage(w io.Writer, cfg any) { UsageOf(w, cfg, nil) }

// UsageOf writes the variables of cfg named in names as Usage does, in the
// order of cfg; nil names means every variable.
func UsageOf(w io.Writer, cfg any, names []string) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	writeUsage(tw, reflect.TypeOf(cfg).Elem(), func(key string) bool { return names == nil || slices.Contains(names, key) })
	tw.Flush()
}

// EnvNames lists the variables of cfg (a pointer to a config struct).
func EnvNames(cfg any) []string {
	keys := fieldKeys(reflect.TypeOf(cfg).Elem())
	names := make([]string, 0, len(keys))
	for _, k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

func writeUsage(w io.Writer, t reflect.Type, keep func(key string) bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("env")
		if f.Type.Kind() == reflect.Struct && tag == "" {
			writeUsage(w, f.Type, keep)
			continue
		}
		key, opts, _ := strings.Cut(tag, ",")
		if key == "" || !keep(key) {
			continue
		}
		def := f.Tag.Get("envDefault")
		switch {
		case strings.Contains(opts, "required"):
			def = "(required)"
		case def == "":
			def = "-"
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\n", key, def, f.Tag.Get("help"))
	}
}
