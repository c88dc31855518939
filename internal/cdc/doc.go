// Package cdc turns the Postgres logical replication stream (pgoutput) of the
// outbox table into decoded, committed inserts.
//
// A Stream owns one replication connection at a time. It reads in its own
// goroutine, registers every transaction and event with the checkpoint
// tracker before handing the event over, and reports the tracker's safe
// position to Postgres (standby status updates) on an interval, when the
// server asks, and while it waits for the publisher to make room. It
// reconnects with capped backoff, waits as a hot standby while another
// process holds the slot, and resumes from the confirmed position.
//
// It does not publish anything and does not build messages: that is the
// envelope and publish packages' work.
package cdc
