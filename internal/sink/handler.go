package sink

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// Event is one message being applied.
type Event struct {
	Envelope   *envelope.Envelope
	Body       []byte // the message body (the envelope JSON) as received; do not modify
	Subject    string
	Header     nats.Header
	Stream     string
	Sequence   uint64 // stream sequence
	Deliveries int    // server deliveries of this message, 1 the first time
}

// Handler applies one event. It runs inside the inbox transaction tx, with
// jetstream_bridge.applying set; its database writes commit or roll back
// together with the inbox row. A handler with effects outside the database
// (a webhook) must make them idempotent by event id: a crash after the effect
// and before the commit repeats it.
//
// Return nil when applied, a *PermanentError when the event can never be
// applied (it is dead-lettered at once), any other error to retry.
type Handler interface {
	Handle(ctx context.Context, tx pgx.Tx, ev *Event) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, tx pgx.Tx, ev *Event) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, tx pgx.Tx, ev *Event) error { return f(ctx, tx, ev) }

// PermanentError reports an event the handler refuses for good. The sink
// dead-letters it at once with class "handler" and Reason as Bridge-Error.
type PermanentError struct {
	Reason string
	Err    error // the cause, if any
}

func (e *PermanentError) Error() string { return e.Reason }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent returns a *PermanentError with the given reason.
func Permanent(reason string) error { return &PermanentError{Reason: reason} }

// ErrNoRoute is the cause of the *PermanentError a Router returns for an
// event no route matches.
var ErrNoRoute = errors.New("no route matches")

// HandlerKind is what a handler spec names.
type HandlerKind int

const (
	KindSQL  HandlerKind = iota + 1 // sql:schema.name
	KindHTTP                        // http:// or https:// URL
)

// ParseHandlerSpec checks a HANDLER value (or a route's handler) without
// connecting anywhere: "sql:schema.name" with two plain lowercase
// identifiers (anything else is refused, never quoted, so the value cannot
// carry SQL), or an absolute http:// or https:// URL. For KindSQL target is
// "schema.name"; for KindHTTP the URL.
func ParseHandlerSpec(spec string) (kind HandlerKind, target string, err error) {
	switch {
	case strings.HasPrefix(spec, "sql:"):
		target = strings.TrimPrefix(spec, "sql:")
		schema, name, ok := strings.Cut(target, ".")
		if !ok {
			return 0, "", fmt.Errorf("%q: expected sql:schema.name (for example sql:public.apply_event)", spec)
		}
		if err := migrations.ValidIdent(schema); err != nil {
			return 0, "", fmt.Errorf("%q: schema %w; expected sql:schema.name", spec, err)
		}
		if err := migrations.ValidIdent(name); err != nil {
			return 0, "", fmt.Errorf("%q: name %w; expected sql:schema.name", spec, err)
		}
		return KindSQL, target, nil
	case strings.HasPrefix(spec, "http://"), strings.HasPrefix(spec, "https://"):
		u, err := url.Parse(spec)
		if err != nil {
			return 0, "", fmt.Errorf("%q: not a valid URL: %w", spec, err)
		}
		if u.Host == "" {
			return 0, "", fmt.Errorf("%q: the URL has no host", spec)
		}
		if u.User != nil {
			return 0, "", fmt.Errorf("%q: credentials in the URL are not supported; use WEBHOOK_SECRET", u.Redacted())
		}
		return KindHTTP, spec, nil
	}
	return 0, "", fmt.Errorf("%q: expected sql:schema.name or an http:// or https:// URL", spec)
}

// Handlers builds handlers from specs, sharing one instance per distinct spec.
type Handlers struct {
	DB   *pgxpool.Pool // for looking SQL handlers up in pg_proc
	HTTP HTTPOptions

	built map[string]Handler
}

// Build returns the handler for spec, looking SQL handlers up in the
// database and checking their signature.
func (b *Handlers) Build(ctx context.Context, spec string) (Handler, error) {
	if h, ok := b.built[spec]; ok {
		return h, nil
	}
	kind, target, err := ParseHandlerSpec(spec)
	if err != nil {
		return nil, err
	}
	var h Handler
	switch kind {
	case KindSQL:
		h, err = NewSQLHandler(ctx, b.DB, target)
	case KindHTTP:
		h, err = NewHTTPHandler(target, b.HTTP)
	}
	if err != nil {
		return nil, err
	}
	if b.built == nil {
		b.built = map[string]Handler{}
	}
	b.built[spec] = h
	return h, nil
}
