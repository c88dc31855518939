package sink

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
)

// HTTPOptions configures webhook handlers.
type HTTPOptions struct {
	// Secret signs requests with Standard Webhooks headers when set. A
	// secret starting with "whsec_" is base64 after the prefix (the Standard
	// Webhooks form); any other value is used as raw bytes.
	Secret  string
	Timeout time.Duration // per request; 0 means 10s
	Client  *http.Client  // nil: a client with keep-alive, no redirects
	// Concurrency is how many calls may be in flight at once (the sink's
	// CONCURRENCY): the default client keeps that many idle connections
	// per host, at least 64, so that no call opens a new one under load.
	Concurrency int
	// Tracer, when set, makes every call a client span, the child of the
	// apply span in ctx, whose context the request's traceparent carries;
	// nil forwards the message's traceparent as it is.
	Tracer trace.Tracer
}

// maxReasonBody is how much of a refusing response's body goes into the
// dead-letter reason.
const maxReasonBody = 256

// HTTPHandler POSTs the envelope to a URL. The call happens while the inbox
// row is written and not yet committed (several events' rows may share one
// transaction: batch.go); the receiver makes it idempotent with the
// Idempotency-Key header (the event id), since a crash after the call and
// before the commit repeats it: webhooks are at-least-once. It does not use
// the transaction it is given, which may be nil.
//
// Responses: 2xx applied; 408, 429 and 5xx, connection errors and timeouts
// are retried; any other status (3xx included: redirects are not followed,
// a POST must not silently become a GET) refuses the event for good.
type HTTPHandler struct {
	url    string
	key    []byte // nil: unsigned
	client *http.Client
	tracer trace.Tracer
}

// DecodeWebhookSecret returns the signing key of a WEBHOOK_SECRET value. The
// error never contains the secret.
func DecodeWebhookSecret(secret string) ([]byte, error) {
	if secret == "" {
		return nil, nil
	}
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		key, err := base64.StdEncoding.DecodeString(rest)
		if err != nil || len(key) == 0 {
			return nil, errors.New("a secret starting with whsec_ must be followed by base64 (Standard Webhooks form)")
		}
		return key, nil
	}
	return []byte(secret), nil
}

// NewHTTPHandler returns a webhook handler for target, an http(s) URL.
func NewHTTPHandler(target string, o HTTPOptions) (*HTTPHandler, error) {
	if _, _, err := ParseHandlerSpec(target); err != nil {
		return nil, err
	}
	key, err := DecodeWebhookSecret(o.Secret)
	if err != nil {
		return nil, fmt.Errorf("WEBHOOK_SECRET: %w", err)
	}
	client := o.Client
	if client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = max(64, o.Concurrency)
		t.MaxIdleConns = max(t.MaxIdleConns, t.MaxIdleConnsPerHost)
		timeout := o.Timeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		client = &http.Client{
			Transport:     t,
			Timeout:       timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &HTTPHandler{url: target, key: key, client: client, tracer: o.Tracer}, nil
}

// Handle POSTs the body.
func (h *HTTPHandler) Handle(ctx context.Context, _ pgx.Tx, ev *Event) error {
	if h.tracer == nil {
		return h.post(ctx, ev, nil)
	}
	ctx, span := h.tracer.Start(ctx, http.MethodPost, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("http.request.method", http.MethodPost), attribute.String("url.full", redactURL(h.url))))
	err := h.post(ctx, ev, span)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	return err
}

// post makes the call; span, when set, is the call's and its context goes
// in traceparent.
func (h *HTTPHandler) post(ctx context.Context, ev *Event, span trace.Span) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(ev.Body))
	if err != nil {
		return &PermanentError{Reason: "build webhook request: " + err.Error(), Err: err}
	}
	id := ev.Envelope.EventID
	req.Header["Content-Type"] = []string{envelope.ContentTypeJSON}
	req.Header["Idempotency-Key"] = []string{id}
	req.Header["User-Agent"] = []string{"jetstream-bridge-sink"}
	if span != nil {
		tracing.InjectHTTP(ctx, req.Header)
	} else if tp := ev.Header.Get(envelope.HeaderTraceparent); tp != "" {
		req.Header["Traceparent"] = []string{tp}
	}
	if h.key != nil {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req.Header["Webhook-Id"] = []string{id}
		req.Header["Webhook-Timestamp"] = []string{ts}
		req.Header["Webhook-Signature"] = []string{Sign(h.key, id, ts, ev.Body)}
	}
	resp, err := h.client.Do(req)
	if err != nil {
		// *url.Error repeats the full URL, query string included.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("webhook %s: %w", redactURL(h.url), err)
	}
	defer resp.Body.Close()
	if span != nil {
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// Drain a little so the connection can be reused.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxReasonBody))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	reason := "http " + strconv.Itoa(resp.StatusCode) + ": " + string(head)
	switch s := resp.StatusCode; {
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s >= 500:
		return errors.New(reason)
	}
	return &PermanentError{Reason: reason}
}

// outside makes HTTPHandler a callHandler: its effect is outside the
// database, so events' inbox rows can share a transaction (batch.go).
func (h *HTTPHandler) outside(*envelope.Envelope, string) Handler { return h }

// Sign returns the Standard Webhooks signature header value:
// "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)).
func Sign(key []byte, id, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// String returns the URL without credentials or query.
func (h *HTTPHandler) String() string { return redactURL(h.url) }

// redactURL drops the query string, which may carry tokens, for logs and
// error messages.
func redactURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		return u[:i]
	}
	return u
}
