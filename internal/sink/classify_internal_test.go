package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestClassify_BySQLSTATEClass is the table of what each SQLSTATE class
// does, for the inbox's own statements, for the handler and for COMMIT.
func TestClassify_BySQLSTATEClass(t *testing.T) {
	const (
		infra     = "infra"     // retried, not counted
		poison    = "poison"    // dead-lettered at once
		fatal     = "fatal"     // the sink stops
		attempt   = "attempt"   // counted, BACKOFF, exhausted after MAX_DELIVER
		permanent = "permanent" // dead-lettered at once, class handler
	)
	kindOf := func(err error) string {
		var (
			ie *infraError
			pe *poisonError
			fe *fatalError
			he *handlerError
			pm *PermanentError
		)
		switch {
		case errors.As(err, &pe):
			return poison
		case errors.As(err, &fe):
			return fatal
		case errors.As(err, &ie):
			return infra
		case errors.As(err, &he) && errors.As(he.err, &pm):
			return permanent
		case errors.As(err, &he):
			return attempt
		}
		return fmt.Sprintf("unclassified %T", err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		code                   string
		inbox, handler, commit string
	}{
		{"08006", infra, infra, infra},        // connection failure
		{"53100", infra, infra, infra},        // disk full
		{"53300", infra, infra, infra},        // too many connections
		{"57P01", infra, infra, infra},        // admin shutdown
		{"58030", infra, infra, infra},        // io error
		{"25006", infra, infra, infra},        // read-only: connected to a standby
		{"40001", infra, infra, infra},        // serialization failure
		{"40P01", infra, infra, infra},        // deadlock
		{"57014", infra, attempt, attempt},    // statement_timeout
		{"55P03", infra, attempt, attempt},    // lock_timeout
		{"22P02", poison, attempt, permanent}, // invalid input (a SQL handler makes it permanent itself)
		{"22021", poison, attempt, permanent}, // NUL in text
		{"23503", poison, attempt, attempt},   // foreign key violation (deferred: at COMMIT)
		{"23505", poison, attempt, attempt},   // unique violation
		{"23514", poison, attempt, attempt},   // check violation
		{"54000", poison, attempt, attempt},   // index row too large
		{"P0001", poison, attempt, attempt},   // RAISE EXCEPTION (a trigger)
		{"JBDLQ", fatal, attempt, permanent},  // the refusal code, raised at COMMIT by a constraint trigger
		{"42703", fatal, attempt, attempt},    // undefined column
		{"42P01", fatal, attempt, attempt},    // undefined table
		{"42501", fatal, attempt, attempt},    // insufficient privilege
		{"0A000", fatal, attempt, attempt},    // feature not supported
		{"XX000", fatal, attempt, attempt},    // internal error
		{"XX001", fatal, attempt, attempt},    // data corrupted
		{"25P02", fatal, attempt, attempt},    // in failed transaction
		{"55000", fatal, attempt, attempt},    // object not in prerequisite state
		{"ZZ999", fatal, attempt, attempt},    // unknown
	} {
		pgErr := &pgconn.PgError{Code: tc.code, Message: "m"}
		if got := kindOf(classifyDB(ctx, "write inbox row", pgErr)); got != tc.inbox {
			t.Errorf("%s in an inbox statement: %s, want %s", tc.code, got, tc.inbox)
		}
		if got := kindOf(classifyHandler("handler", fmt.Errorf("h: %w", pgErr))); got != tc.handler {
			t.Errorf("%s from the handler: %s, want %s", tc.code, got, tc.handler)
		}
		if got := kindOf(classifyCommit(ctx, pgErr)); got != tc.commit {
			t.Errorf("%s at COMMIT: %s, want %s", tc.code, got, tc.commit)
		}
	}

	// No answer from the server: the outcome is unknown, never an attempt.
	lost := errors.New("unexpected EOF")
	if got := kindOf(classifyCommit(ctx, lost)); got != infra {
		t.Errorf("COMMIT without an answer: %s, want infra", got)
	}
	if got := kindOf(classifyDB(ctx, "write inbox row", lost)); got != infra {
		t.Errorf("inbox statement without an answer: %s, want infra", got)
	}
	// A shutdown cancels statements: not the event's fault.
	done, cancel := context.WithCancel(ctx)
	cancel()
	for _, code := range []string{"57014", "22P02", "42703"} {
		if got := kindOf(classifyDB(done, "write inbox row", &pgconn.PgError{Code: code})); got != infra {
			t.Errorf("%s after the context ended: %s, want infra", code, got)
		}
		if got := kindOf(classifyCommit(done, &pgconn.PgError{Code: code})); got != infra {
			t.Errorf("%s at COMMIT after the context ended: %s, want infra", code, got)
		}
	}
	// The reasons name the SQLSTATE.
	if err := classifyDB(ctx, "write inbox row", &pgconn.PgError{Code: "42703", Message: `column "tx_index" does not exist`}); !strings.Contains(err.Error(), "42703") {
		t.Errorf("fatal error %q does not name the SQLSTATE", err)
	}
}
