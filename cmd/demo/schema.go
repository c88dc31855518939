package main

import _ "embed"

// schemaSQL is the demo's business schema, triggers and SQL handler. It needs
// the outbox schema (for jetstream_publish) applied first.
//
//go:embed schema.sql
var schemaSQL string
