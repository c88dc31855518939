// Package chaos is the bridge's fault-injection run: the real relay and sink
// binaries, as separate processes, against one Postgres cluster and one NATS
// JetStream server, while writers commit (and roll back) outbox events over
// many keys and a seeded scheduler kills relays and sinks, restarts NATS and
// crashes Postgres. When writers and faults stop it waits for the backlog to
// drain and checks the end state against the writers' ground truth: nothing
// lost, nothing applied twice, no key applied out of order, no rolled-back
// event seen.
//
// The run itself is the test TestChaos (chaos_test.go); see
// docs/RELIABILITY.md for the method, the definitions and the last figures.
// This file's package holds only what the test needs that is plain logic and
// deserves its own unit tests: the profiles (Profile), the fault schedule
// (Scheduler) and the end-state analysis (Analyze, Report).
//
// It is not a load test: writers run at a fixed, modest rate so that the run
// fits a shared two-core CI machine.
package chaos
