package chaos_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/chaos"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// pgPair is the world's Postgres when the postgres-failover fault is
// enabled: a primary and a synchronous streaming standby on two ports fixed
// for the whole run. Every process and writer reaches Postgres through a
// multi-host URL listing both ports; a failover promotes the standby and
// starts the next standby on the crashed primary's port, so the roles cycle
// between the two ports and the URL stays right.
type pgPair struct {
	standby  *testutil.Standby
	nodes    int             // clusters started, for cluster_name
	promoted []time.Duration // primary crash to the standby accepting writes
	resumed  []time.Duration // promotion to a relay replicating again
}

// startPair gives the world's primary a synchronous standby and points the
// world's URLs at both, when the profile enables the failover fault.
func (w *world) startPair() {
	if !w.p.Enabled(chaos.PostgresFailover) {
		return
	}
	w.fo = &pgPair{nodes: 1}
	w.fo.standby = w.startStandby(0)
	w.srcURL = testutil.MultiHostURL("source", w.pg, w.fo.standby.Postgres)
	w.dstURL = testutil.MultiHostURL("target", w.pg, w.fo.standby.Postgres)
}

// startStandby starts the next synchronous standby of w.pg (on port, or a
// free one for 0). Each standby's own configuration names the standby that
// will follow it in synchronous_standby_names, which a standby ignores:
// once promoted, its commits wait for that next standby at once, as in a
// deployment whose nodes are configured for the failover ahead of it, and
// the relay's sync fence (auto) finds the setting as soon as it
// reconnects. (Not '*': the relay's logical walsender would qualify.)
func (w *world) startStandby(port int) *testutil.Standby {
	w.fo.nodes++
	return testutil.StartStandby(w.t, w.pg, testutil.StandbyOptions{
		Name:        fmt.Sprintf("node_%d", w.fo.nodes),
		Synchronous: true,
		Port:        port,
		Settings:    map[string]string{"synchronous_standby_names": fmt.Sprintf(`"node_%d"`, w.fo.nodes+1)},
	})
}

// failPostgresOver is the postgres-failover fault: crash the primary,
// promote the standby, keep the old primary's port dark for the pause, then
// start a new synchronous standby there.
func (w *world) failPostgresOver(ctx context.Context, n int, st chaos.Step) {
	old, next := w.pg, w.fo.standby
	w.logf("fault %d: Postgres failover: crash the primary (port %d, stop -m immediate), promote the standby (port %d), new standby after %s",
		n, old.Port(), next.Port(), st.Pause.Round(time.Millisecond))
	if err := old.Stop("immediate"); err != nil {
		w.t.Errorf("crash primary: %v", err)
		return
	}
	crashed := time.Now()
	next.Promote()
	promoted := time.Now()
	w.pg = next.Postgres
	w.logf("  standby promoted after %s", promoted.Sub(crashed).Round(time.Millisecond))
	// Its commits wait for the next standby from now on (see startStandby):
	// writers, sinks and the relay's slot recovery and fence wait with them
	// until it streams.
	sleepUntil(crashed.Add(st.Pause))
	// The crashed cluster is not started again: its port goes to the next
	// standby, a fresh copy of the new primary.
	if err := old.Close(); err != nil {
		w.t.Errorf("close crashed primary: %v", err)
	}
	w.fo.standby = w.startStandby(old.Port())
	w.logf("  new synchronous standby on port %d streaming, %s after the crash", old.Port(), time.Since(crashed).Round(time.Millisecond))
	var resumed time.Duration
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
		if w.activeRelay() >= 0 {
			resumed = time.Since(promoted)
			w.logf("  a relay replicates from the new primary %s after the promotion", resumed.Round(time.Millisecond))
			break
		}
	}
	w.mu.Lock()
	w.fo.promoted = append(w.fo.promoted, promoted.Sub(crashed))
	if resumed > 0 {
		w.fo.resumed = append(w.fo.resumed, resumed)
	}
	w.mu.Unlock()
}

// reportFailovers adds the Postgres failovers to the run's report.
func (w *world) reportFailovers(b io.Writer) {
	if w.fo == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(b, "postgres failovers: %d, standby promoted in %s, relay replicating again %s after promotion\n",
		len(w.fo.promoted), summarize(w.fo.promoted), summarize(w.fo.resumed))
}
