// Package sqlstate sorts Postgres errors by SQLSTATE into the few kinds a
// caller decides on: is the server or the connection in trouble (retry
// without blaming the work), did Postgres roll the transaction back because
// of what ran beside it (retry), or did the work itself fail, and then
// because of its data, of the schema or configuration, or of code that
// raised on purpose.
//
// The decision is made per SQLSTATE class (the first two characters), with
// the few codes whose meaning differs from their class's listed
// explicitly. Every class Postgres defines is placed on purpose; a code this
// package does not know is Unknown, and a caller must let Unknown end
// somewhere visible, never in a silent endless retry.
//
// This package only sorts; what each kind means (retry, dead-letter, stop)
// is for the caller to say, since it differs between the statements a
// program owns and the ones it runs for someone else.
package sqlstate

import (
	"errors"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
)

// Kind is what an error says about whose fault it is.
type Kind int

const (
	// Unknown: not a Postgres error, or a SQLSTATE outside every class
	// below.
	Unknown Kind = iota
	// Unavailable: the connection or the server is in trouble (08
	// connection exception, 53 insufficient resources, 57 operator
	// intervention but 57014, 58 system error, 25006 read-only
	// transaction: connected to a standby). The same statement succeeds
	// once the server is back.
	Unavailable
	// Rollback: Postgres rolled the transaction back because of what ran
	// next to it (40 serialization failure, deadlock; 72000 snapshot too
	// old). The same work succeeds when tried again.
	Rollback
	// Timeout: a statement or lock wait ran out of the time it was given
	// (57014 query canceled, which statement_timeout raises; 55P03 lock not
	// available, which lock_timeout raises).
	Timeout
	// Data: the values given cannot be stored or computed (22 data
	// exception, 23 integrity constraint violation, 54 program limit
	// exceeded, such as an index row too large; 44 with check option
	// violation).
	Data
	// Config: the schema, the privileges or the connection settings do
	// not fit the statement (42 syntax error or access rule violation, 0A
	// feature not supported, 28 invalid authorization, 3D invalid
	// database, 3F invalid schema, 2B dependent privilege descriptors
	// still exist). Nothing a retry changes until someone fixes it.
	Config
	// Raised: code decided to fail (P0 PL/pgSQL raise, including RAISE
	// EXCEPTION and ASSERT; 38 external routine exception, 39 external
	// routine invocation; 09 triggered action; 27 triggered data change
	// violation; 2F SQL routine exception).
	Raised
	// Internal: Postgres failed internally or found corruption (XX).
	Internal
	// State: a statement ran in a state that does not allow it (25 invalid
	// transaction state but 25006, 24 invalid cursor state, 26 invalid
	// statement name, 34 invalid cursor name, 55 object not in prerequisite
	// state but 55P03, 0B invalid transaction initiation, 0F locator, 0L
	// invalid grantor, 0P invalid role, 2D invalid transaction
	// termination, 3B savepoint exception, F0 configuration file error,
	// HV foreign data wrapper, 20 case not found, 21 cardinality
	// violation, 0Z diagnostics exception; 00, 01 and 02 are not errors).
	// A program bug or an environment problem, not the data.
	State
)

var kindNames = [...]string{
	Unknown: "unknown", Unavailable: "unavailable", Rollback: "rollback", Timeout: "timeout",
	Data: "data", Config: "config", Raised: "raised", Internal: "internal", State: "state",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// codes are the codes whose kind differs from their class's.
var codes = map[string]Kind{
	"25006": Unavailable, // read_only_sql_transaction: a standby (after a failover)
	"57014": Timeout,     // query_canceled: statement_timeout, or a cancel request
	"55P03": Timeout,     // lock_not_available: lock_timeout, NOWAIT
	"72000": Rollback,    // snapshot_too_old
}

// classes maps each SQLSTATE class to its kind.
var classes = map[string]Kind{
	"08": Unavailable, "53": Unavailable, "57": Unavailable, "58": Unavailable,
	"40": Rollback,
	"22": Data, "23": Data, "54": Data, "44": Data,
	"42": Config, "0A": Config, "28": Config, "3D": Config, "3F": Config, "2B": Config,
	"P0": Raised, "38": Raised, "39": Raised, "09": Raised, "27": Raised, "2F": Raised,
	"XX": Internal,
	"25": State, "24": State, "26": State, "34": State, "55": State, "0B": State, "0F": State,
	"0L": State, "0P": State, "2D": State, "3B": State, "F0": State, "HV": State, "20": State,
	"21": State, "00": State, "01": State, "02": State, "0Z": State,
	"72": Rollback,
}

// Of returns the kind of code.
func Of(code string) Kind {
	if k, ok := codes[code]; ok {
		return k
	}
	if len(code) == 5 {
		if k, ok := classes[code[:2]]; ok {
			return k
		}
	}
	return Unknown
}

// Classify returns the SQLSTATE carried by err (anywhere in its chain) and
// its kind; ok is false when err carries no Postgres error.
func Classify(err error) (code string, kind Kind, ok bool) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return "", Unknown, false
	}
	return pgErr.Code, Of(pgErr.Code), true
}

// Retryable reports whether k says the work was not at fault: the server or
// connection was in trouble, or Postgres rolled the transaction back for
// what ran beside it.
func (k Kind) Retryable() bool { return k == Unavailable || k == Rollback }
