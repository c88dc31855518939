package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// PermanentSQLState is the SQLSTATE a SQL handler raises to refuse an event
// for good (RAISE EXCEPTION '...' USING ERRCODE = 'JBDLQ'): the event is
// dead-lettered at once instead of retried. Data exceptions (SQLSTATE class
// 22: invalid input syntax, division by zero, value out of range, ...) are
// permanent too: the same event would fail the same way every time.
const PermanentSQLState = "JBDLQ"

// permanentSQLState reports whether a SQL handler failing with code refuses
// the event for good.
func permanentSQLState(code string) bool {
	return code == PermanentSQLState || strings.HasPrefix(code, "22")
}

// Querier is what looking a handler up needs: a pool, a connection or a
// transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// SQLHandler calls a procedure (CALL) or function (SELECT) with the envelope
// as its single jsonb argument, inside the inbox transaction.
type SQLHandler struct {
	name string // schema.name
	stmt string
}

// NewSQLHandler looks schema.name up in pg_proc: it must exist once (not
// overloaded), be a procedure or a plain function, and take one jsonb
// argument (further arguments must have defaults). target is validated
// again, so only plain identifiers ever reach the SQL text.
func NewSQLHandler(ctx context.Context, db Querier, target string) (*SQLHandler, error) {
	schema, name, ok := strings.Cut(target, ".")
	if !ok || migrations.ValidIdent(schema) != nil || migrations.ValidIdent(name) != nil {
		return nil, fmt.Errorf("sql handler %q: expected schema.name with plain lowercase identifiers", target)
	}
	rows, err := db.Query(ctx, `
		SELECT p.prokind::text, p.pronargs, p.pronargdefaults,
		       p.pronargs > 0 AND p.proargtypes[0] = 'jsonb'::regtype::oid,
		       pg_get_function_identity_arguments(p.oid)
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = $1 AND p.proname = $2`, schema, name)
	if err != nil {
		return nil, fmt.Errorf("look up sql handler %s: %w", target, err)
	}
	type candidate struct {
		kind             string
		nargs, ndefaults int16
		firstJSONB       bool
		args             string
	}
	var found []candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.kind, &c.nargs, &c.ndefaults, &c.firstJSONB, &c.args); err != nil {
			rows.Close()
			return nil, fmt.Errorf("look up sql handler %s: %w", target, err)
		}
		found = append(found, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up sql handler %s: %w", target, err)
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("sql handler %s: no procedure or function of that name (create it, or check HANDLER)", target)
	case 1:
	default:
		sigs := make([]string, len(found))
		for i, c := range found {
			sigs[i] = target + "(" + c.args + ")"
		}
		return nil, fmt.Errorf("sql handler %s is ambiguous: %d overloads (%s); keep one taking a single jsonb argument",
			target, len(found), strings.Join(sigs, ", "))
	}
	c := found[0]
	if !c.firstJSONB || c.nargs-c.ndefaults > 1 {
		return nil, fmt.Errorf("sql handler %s(%s): must take a single jsonb argument (the envelope)", target, c.args)
	}
	quoted := `"` + schema + `"."` + name + `"($1::jsonb)`
	h := &SQLHandler{name: target}
	switch c.kind {
	case "p":
		h.stmt = "CALL " + quoted
	case "f":
		h.stmt = "SELECT " + quoted
	default:
		return nil, fmt.Errorf("sql handler %s is an aggregate or window function; use a procedure or a plain function", target)
	}
	return h, nil
}

// Handle runs the procedure or function with the message body.
func (h *SQLHandler) Handle(ctx context.Context, tx pgx.Tx, ev *Event) error {
	_, err := tx.Exec(ctx, h.stmt, ev.Body)
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && permanentSQLState(pgErr.Code) {
		return &PermanentError{Reason: h.name + ": " + pgErr.Message + " (SQLSTATE " + pgErr.Code + ")", Err: err}
	}
	return fmt.Errorf("%s: %w", h.name, err)
}

// statement makes SQLHandler a statementHandler.
func (h *SQLHandler) statement(*envelope.Envelope, string) string { return h.stmt }

// String returns the handler spec.
func (h *SQLHandler) String() string { return "sql:" + h.name }
