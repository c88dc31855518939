package sqlstate_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/sqlstate"
)

// TestOf places every SQLSTATE class Postgres defines, and the codes that
// differ from their class.
func TestOf(t *testing.T) {
	for _, tc := range []struct {
		code string
		want sqlstate.Kind
	}{
		{"08006", sqlstate.Unavailable}, // connection failure
		{"08P01", sqlstate.Unavailable}, // protocol violation
		{"53100", sqlstate.Unavailable}, // disk full
		{"53300", sqlstate.Unavailable}, // too many connections
		{"57P01", sqlstate.Unavailable}, // admin shutdown
		{"57P03", sqlstate.Unavailable}, // cannot connect now
		{"58030", sqlstate.Unavailable}, // io error
		{"25006", sqlstate.Unavailable}, // read-only transaction: a standby
		{"40001", sqlstate.Rollback},    // serialization failure
		{"40P01", sqlstate.Rollback},    // deadlock detected
		{"72000", sqlstate.Rollback},    // snapshot too old
		{"57014", sqlstate.Timeout},     // query canceled (statement_timeout)
		{"55P03", sqlstate.Timeout},     // lock not available (lock_timeout)
		{"22001", sqlstate.Data},        // string data right truncation
		{"22P02", sqlstate.Data},        // invalid text representation
		{"22021", sqlstate.Data},        // character not in repertoire (NUL)
		{"23503", sqlstate.Data},        // foreign key violation
		{"23505", sqlstate.Data},        // unique violation
		{"23514", sqlstate.Data},        // check violation
		{"54000", sqlstate.Data},        // program limit exceeded (index row too large)
		{"54001", sqlstate.Data},        // statement too complex
		{"44000", sqlstate.Data},        // with check option violation
		{"42703", sqlstate.Config},      // undefined column
		{"42P01", sqlstate.Config},      // undefined table
		{"42501", sqlstate.Config},      // insufficient privilege
		{"42601", sqlstate.Config},      // syntax error
		{"0A000", sqlstate.Config},      // feature not supported
		{"28P01", sqlstate.Config},      // invalid password
		{"3D000", sqlstate.Config},      // invalid catalog name
		{"3F000", sqlstate.Config},      // invalid schema name
		{"2BP01", sqlstate.Config},      // dependent objects still exist
		{"P0001", sqlstate.Raised},      // raise exception
		{"P0004", sqlstate.Raised},      // assert failure
		{"38000", sqlstate.Raised},      // external routine exception
		{"39001", sqlstate.Raised},      // external routine invocation
		{"09000", sqlstate.Raised},      // triggered action exception
		{"27000", sqlstate.Raised},      // triggered data change violation
		{"2F005", sqlstate.Raised},      // function executed no return statement
		{"XX000", sqlstate.Internal},    // internal error
		{"XX001", sqlstate.Internal},    // data corrupted
		{"25P02", sqlstate.State},       // in failed sql transaction
		{"24000", sqlstate.State},       // invalid cursor state
		{"26000", sqlstate.State},       // invalid statement name
		{"34000", sqlstate.State},       // invalid cursor name
		{"55000", sqlstate.State},       // object not in prerequisite state
		{"55006", sqlstate.State},       // object in use
		{"0B000", sqlstate.State},       // invalid transaction initiation
		{"0F000", sqlstate.State},       // locator exception
		{"0L000", sqlstate.State},       // invalid grantor
		{"0P000", sqlstate.State},       // invalid role specification
		{"0Z000", sqlstate.State},       // diagnostics exception
		{"2D000", sqlstate.State},       // invalid transaction termination
		{"3B000", sqlstate.State},       // savepoint exception
		{"F0000", sqlstate.State},       // config file error
		{"HV000", sqlstate.State},       // fdw error
		{"20000", sqlstate.State},       // case not found
		{"21000", sqlstate.State},       // cardinality violation
		{"JBDLQ", sqlstate.Unknown},     // a code of the application's own
		{"ZZ999", sqlstate.Unknown},
		{"", sqlstate.Unknown},
		{"22", sqlstate.Unknown}, // a class alone is no code
	} {
		if got := sqlstate.Of(tc.code); got != tc.want {
			t.Errorf("Of(%q) = %s, want %s", tc.code, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	err := fmt.Errorf("insert: %w", &pgconn.PgError{Code: "54000", Message: "index row size 5016 exceeds btree version 4 maximum 2704"})
	code, kind, ok := sqlstate.Classify(err)
	if !ok || code != "54000" || kind != sqlstate.Data {
		t.Fatalf("Classify = %q, %s, %v; want 54000, data, true", code, kind, ok)
	}
	if _, kind, ok := sqlstate.Classify(errors.New("connection reset")); ok || kind != sqlstate.Unknown {
		t.Fatalf("Classify(plain error) = %s, %v; want unknown, false", kind, ok)
	}
	for k, want := range map[sqlstate.Kind]bool{sqlstate.Unavailable: true, sqlstate.Rollback: true,
		sqlstate.Timeout: false, sqlstate.Data: false, sqlstate.Config: false, sqlstate.Unknown: false} {
		if got := k.Retryable(); got != want {
			t.Errorf("%s.Retryable() = %v, want %v", k, got, want)
		}
	}
}
