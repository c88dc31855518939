package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// Route sends matching events to Handler. Empty fields match anything;
// Subject is a NATS pattern ('*' one token, '>' the rest).
type Route struct {
	EventType    string `yaml:"event_type" json:"event_type"`
	ResourceType string `yaml:"resource_type" json:"resource_type"`
	Subject      string `yaml:"subject" json:"subject"`
	Handler      string `yaml:"handler" json:"handler"`
}

// LoadRoutes reads and checks a ROUTES_FILE.
func LoadRoutes(path string) ([]Route, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routes file: %w", err)
	}
	routes, err := ParseRoutes(data)
	if err != nil {
		return nil, fmt.Errorf("routes file %s: %w", path, err)
	}
	return routes, nil
}

// ParseRoutes parses a routes document, JSON or YAML, either a list of
// routes or an object with a "routes" list, and checks every route: its
// handler spec (ParseHandlerSpec) and subject pattern. Unknown keys are
// refused, so a misspelt field does not silently match everything. Errors
// name the route as routes[i] (0-based).
func ParseRoutes(data []byte) ([]Route, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil, errors.New("no routes")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var routes []Route
	switch doc.Content[0].Kind {
	case yaml.SequenceNode:
		if err := dec.Decode(&routes); err != nil {
			return nil, fmt.Errorf("parse: %w", err)
		}
	case yaml.MappingNode:
		var f struct {
			Routes []Route `yaml:"routes"`
		}
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("parse: %w", err)
		}
		routes = f.Routes
	default:
		return nil, errors.New(`expected a list of routes or an object with a "routes" list`)
	}
	if len(routes) == 0 {
		return nil, errors.New("no routes")
	}
	for i, r := range routes {
		if r.Handler == "" {
			return nil, fmt.Errorf("routes[%d]: handler is required", i)
		}
		if _, _, err := ParseHandlerSpec(r.Handler); err != nil {
			return nil, fmt.Errorf("routes[%d]: handler %w", i, err)
		}
		if r.Subject != "" {
			if err := envelope.ValidateFilterSubject(r.Subject); err != nil {
				return nil, fmt.Errorf("routes[%d]: subject: %w", i, err)
			}
		}
	}
	return routes, nil
}

// Router is a Handler that passes each event to the first matching route's
// handler. An event no route matches is refused for good (ErrNoRoute): it
// is dead-lettered, never acked unapplied.
type Router struct {
	routes []compiledRoute
}

type compiledRoute struct {
	Route
	handler Handler
}

// NewRouter builds every route's handler with build (typically
// (*Handlers).Build), in order.
func NewRouter(ctx context.Context, routes []Route, build func(context.Context, string) (Handler, error)) (*Router, error) {
	r := &Router{routes: make([]compiledRoute, len(routes))}
	for i, rt := range routes {
		h, err := build(ctx, rt.Handler)
		if err != nil {
			return nil, fmt.Errorf("routes[%d]: %w", i, err)
		}
		r.routes[i] = compiledRoute{Route: rt, handler: h}
	}
	return r, nil
}

// Handle applies the event with the first matching route.
func (r *Router) Handle(ctx context.Context, tx pgx.Tx, ev *Event) error {
	h := r.Match(ev.Envelope.EventType, ev.Envelope.ResourceType, ev.Subject)
	if h == nil {
		return &PermanentError{Reason: ErrNoRoute.Error(), Err: ErrNoRoute}
	}
	return h.Handle(ctx, tx, ev)
}

// statement makes Router a statementHandler: the matching route's handler
// joins batches when it is a SQL handler. An unroutable event goes alone
// (and is dead-lettered).
func (r *Router) statement(env *envelope.Envelope, subject string) string {
	if sh, ok := r.Match(env.EventType, env.ResourceType, subject).(statementHandler); ok {
		return sh.statement(env, subject)
	}
	return ""
}

// outside makes Router a callHandler: the matching route's handler when
// its effect is outside the database.
func (r *Router) outside(env *envelope.Envelope, subject string) Handler {
	if ch, ok := r.Match(env.EventType, env.ResourceType, subject).(callHandler); ok {
		return ch.outside(env, subject)
	}
	return nil
}

// Match returns the handler of the first route matching the event, or nil.
func (r *Router) Match(eventType, resourceType, subject string) Handler {
	for i := range r.routes {
		c := &r.routes[i]
		if (c.EventType == "" || c.EventType == eventType) &&
			(c.ResourceType == "" || c.ResourceType == resourceType) &&
			(c.Subject == "" || envelope.Covers(c.Subject, subject)) {
			return c.handler
		}
	}
	return nil
}
