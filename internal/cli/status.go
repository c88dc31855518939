package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

// StatusFlags are the flags of a binary's status subcommand.
type StatusFlags struct {
	JSON  bool          // --json: print the status as indented JSON
	Watch time.Duration // --watch: refresh every interval until interrupted; 0 shows it once
}

// ParseStatusFlags parses the flags of the status subcommand.
func (c *CLI) ParseStatusFlags(args []string) (StatusFlags, error) {
	var f StatusFlags
	err := c.Flags("status", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&f.JSON, "json", false, "print JSON")
		fs.DurationVar(&f.Watch, "watch", 0, "refresh every interval (e.g. 2s) until interrupted")
	})
	return f, err
}

// ConnectJetStream connects to NATS as ConnectQuiet does and opens the
// JetStream API on the connection. The caller closes the connection.
func (c *CLI) ConnectJetStream(ctx context.Context, common *config.Common, purpose string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := c.ConnectQuiet(ctx, common, purpose)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("open jetstream: %w", err)
	}
	return nc, js, nil
}

// StatusReport is what a status subcommand shows; see ShowStatus.
type StatusReport[S any] struct {
	// Collect gathers the status through js.
	Collect func(ctx context.Context, js jetstream.JetStream) S
	// Print writes the status as text, taken at now.
	Print func(w io.Writer, st S, now time.Time)
	// Verdict is the subcommand's error for the status (a dependency that
	// is down), nil when all is well.
	Verdict func(st S) error
}

// ShowStatus connects to JetStream with common (see ConnectJetStream) and
// shows the status once, or every f.Watch until ctx ends (see Watch): as
// indented JSON with --json, as text otherwise. It returns the verdict on
// the last status shown.
func ShowStatus[S any](ctx context.Context, c *CLI, common *config.Common, f StatusFlags, r StatusReport[S]) error {
	nc, js, err := c.ConnectJetStream(ctx, common, "status")
	if err != nil {
		return err
	}
	defer nc.Close()
	return c.Watch(ctx, f.Watch, !f.JSON, func() error {
		st := r.Collect(ctx, js)
		if f.JSON {
			enc := json.NewEncoder(c.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(st); err != nil {
				return fmt.Errorf("write status: %w", err)
			}
		} else {
			r.Print(c.Stdout, st, time.Now())
		}
		return r.Verdict(st)
	})
}
