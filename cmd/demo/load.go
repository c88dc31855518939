package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// writer plays one system's application: it inserts and updates
// organizations and users in its own database at a steady rate, as plain
// business writes. The triggers turn each write into one outbox row.
type writer struct {
	name string
	db   *pgxpool.Pool
	rate int
	rng  *mrand.Rand

	orgs, users []string        // ids to update or attach users to: recent rows of the local database
	own         map[string]bool // ids created here

	orgsCreated, orgsUpdated, usersCreated, usersUpdated atomic.Int64
	// foreignUpdates counts updates of rows created on the other side: they
	// reached this database through the sink and are changed here again.
	foreignUpdates atomic.Int64
}

func newWriter(name string, db *pgxpool.Pool, rate int) *writer {
	return &writer{name: name, db: db, rate: rate, rng: mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64())), own: map[string]bool{}}
}

// written is the number of committed writes (each one outbox row).
func (w *writer) written() int64 {
	return w.orgsCreated.Load() + w.orgsUpdated.Load() + w.usersCreated.Load() + w.usersUpdated.Load()
}

// run writes until ctx ends. It returns nil then, or the first failed write.
// Statements run on a context that ctx's end does not cancel: a write
// cancelled in flight might commit without being counted.
func (w *writer) run(ctx context.Context) error {
	stmtCtx := context.WithoutCancel(ctx)
	interval := time.Second / time.Duration(w.rate)
	next := time.Now()
	refreshed := time.Time{}
	for ctx.Err() == nil {
		if time.Since(refreshed) > time.Second {
			if err := w.refresh(stmtCtx); err != nil {
				return w.stopped(err)
			}
			refreshed = time.Now()
		}
		if err := w.writeOne(stmtCtx); err != nil {
			return w.stopped(err)
		}
		next = next.Add(interval)
		if behind := time.Since(next); behind > time.Second {
			next = time.Now() // the database is slower than the rate: do not burst to catch up
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return nil
}

func (w *writer) stopped(err error) error {
	return fmt.Errorf("write on %s: %w", w.name, err)
}

// refresh loads the most recently changed rows, local and synced, as the
// candidates for updates.
func (w *writer) refresh(ctx context.Context) error {
	load := func(table string) ([]string, error) {
		rows, err := w.db.Query(ctx, `SELECT id::text FROM demo.`+table+` ORDER BY updated_at DESC LIMIT 200`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return nil, err
			}
			ids = append(ids, id)
		}
		return ids, rows.Err()
	}
	var err error
	if w.orgs, err = load("organizations"); err != nil {
		return err
	}
	w.users, err = load("users")
	return err
}

var roles = []string{"member", "admin", "owner", "viewer"}

// writeOne makes one write: about 10% new organizations, 30% new users, 30%
// user updates and 30% organization updates. Updates pick among recent rows,
// so rows created on the other side are updated here too.
func (w *writer) writeOne(ctx context.Context) error {
	r := w.rng.Float64()
	switch {
	case len(w.orgs) < 5 || r < 0.10:
		id, tag := newID()
		if _, err := w.db.Exec(ctx, `INSERT INTO demo.organizations (id, name, domain) VALUES ($1, $2, $3)`,
			id, "Org "+tag[:6]+" ("+w.name+")", tag+".example.com"); err != nil {
			return err
		}
		w.own[id] = true
		w.orgs = append(w.orgs, id)
		w.orgsCreated.Add(1)
	case r < 0.40 || len(w.users) == 0:
		id, tag := newID()
		org := w.orgs[w.rng.IntN(len(w.orgs))]
		if _, err := w.db.Exec(ctx, `INSERT INTO demo.users (id, organization_id, name, email, role) VALUES ($1, $2, $3, $4, $5)`,
			id, org, "User "+tag[:6], "u-"+tag+"@example.com", roles[w.rng.IntN(len(roles))]); err != nil {
			return err
		}
		w.own[id] = true
		w.users = append(w.users, id)
		w.usersCreated.Add(1)
	case r < 0.70:
		id := w.users[w.rng.IntN(len(w.users))]
		tag, err := w.update(ctx, `UPDATE demo.users SET name = $2, role = $3, active = $4, updated_at = clock_timestamp() WHERE id = $1`,
			id, fmt.Sprintf("User %04d (%s)", w.rng.IntN(10000), w.name), roles[w.rng.IntN(len(roles))], w.rng.IntN(10) > 0)
		if err != nil || !tag {
			return err
		}
		w.usersUpdated.Add(1)
	default:
		id := w.orgs[w.rng.IntN(len(w.orgs))]
		tag, err := w.update(ctx, `UPDATE demo.organizations SET name = $2, active = $3, updated_at = clock_timestamp() WHERE id = $1`,
			id, fmt.Sprintf("Org %04d (%s)", w.rng.IntN(10000), w.name), w.rng.IntN(10) > 0)
		if err != nil || !tag {
			return err
		}
		w.orgsUpdated.Add(1)
	}
	return nil
}

// update runs an UPDATE of one row by id and reports whether it changed a
// row (only then did the trigger publish an event).
func (w *writer) update(ctx context.Context, sql string, id string, args ...any) (bool, error) {
	tag, err := w.db.Exec(ctx, sql, append([]any{id}, args...)...)
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() != 1 {
		return false, nil
	}
	if !w.own[id] {
		w.foreignUpdates.Add(1)
	}
	return true, nil
}

// newID returns a random UUID and its 32 hex digits. Domains and emails are
// derived from it, so the two sides never collide on a unique column.
func newID() (id, hexID string) {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], h
}
