// Package envelope turns outbox rows into JetStream messages and messages
// back into events: the message body (the envelope, byte-compatible with the
// Ruby jetstream_bridge gem), its headers (Nats-Msg-Id, source position,
// trace context, dead-letter metadata), and the subject conventions
// ({app}.sync.{dest}, {dest}.sync.{app}, {app}.sync.dlq).
//
// It is pure logic: no I/O, no clocks, no logging. The relay calls
// Builder.Build once per event, so Build uses a hand-written JSON encoder and
// validator instead of encoding/json and allocates little beyond the body
// and the header map. The sink calls Parse, ParsePosition and DLQHeader.
//
// Errors are classified here, once: *RowError marks an outbox row that can
// never be published as asked (the relay dead-letters it), and ErrInvalid
// marks a body the sink can never process (dead-lettered as poison).
package envelope
