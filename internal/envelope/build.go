package envelope

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
)

// Header names. Nats-Msg-Id is JetStream's deduplication key; the Bridge-*
// headers are this project's own and no outbox row may set them.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderContentType = "Content-Type"
	HeaderTraceparent = "traceparent"
	HeaderCommitLSN   = "Bridge-Commit-LSN"
	HeaderTxIndex     = "Bridge-Tx-Index"

	HeaderError           = "Bridge-Error"
	HeaderErrorClass      = "Bridge-Error-Class"
	HeaderOriginalSubject = "Bridge-Original-Subject"
	HeaderDeliveries      = "Bridge-Deliveries"
	HeaderFailedAt        = "Bridge-Failed-At"
)

// Values of Bridge-Error-Class on a dead-lettered message.
const (
	ClassPoison    = "poison"    // the sink could not parse or route it
	ClassHandler   = "handler"   // the handler refused it permanently
	ClassExhausted = "exhausted" // the handler kept failing until MAX_DELIVER
	ClassRelay     = "relay"     // the relay could not publish the row as asked
)

// ContentTypeJSON is the Content-Type of every envelope.
const ContentTypeJSON = "application/json"

// SchemaVersion is the envelope schema version Build writes.
const SchemaVersion = 1

// Row is one outbox row as decoded from the WAL (text-format column values).
type Row struct {
	EventID      string
	ResourceType string
	ResourceID   string // "" when NULL
	EventType    string
	Payload      []byte // raw JSON text of the jsonb column; nil when NULL
	// PayloadJSONB says Payload is the text output of a jsonb value, which
	// Postgres has already validated: when ResourceID is set too (no
	// fallback id to look for), Build skips its own JSON scan of the payload.
	// Leave it false for json, text or any payload of unknown origin.
	PayloadJSONB bool
	Headers      []byte // raw JSON text of the jsonb headers column (an object); nil/empty = none
	Subject      string // per-row subject override, "" = none
	Destination  string // per-row destination app override, "" = default
	TraceID      string
	OccurredAt   string // timestamptz text, DateStyle ISO, e.g. "2026-11-24 15:08:12.123456+00"
}

// Position is where an event sits in the source WAL: its transaction's commit
// LSN and its 0-based index inside that transaction. Positions order events
// the way the stream does. A zero CommitLSN means no position (a row
// republished from the table): the builder writes no position headers. On
// the wire (Bridge-Commit-LSN) the LSN is in Postgres text form,
// "16/B374D848" (FormatLSN).
type Position struct {
	CommitLSN pglogrepl.LSN
	TxIndex   int
}

// Message is one envelope ready to publish.
type Message struct {
	Subject string
	Body    []byte
	Header  nats.Header
	MsgID   string // the event id, also in Header[HeaderMsgID]

	vals []string // backing array of Header's values, kept for BuildInto
}

// RowError reports an outbox row that can never be published as asked: the
// relay dead-letters it (class "relay") instead of retrying. Errors from
// Build that are not a *RowError are configuration or programming errors that
// no row can get past.
type RowError struct {
	EventID string
	Reason  string
}

func (e *RowError) Error() string {
	return fmt.Sprintf("outbox event %q: %s", e.EventID, e.Reason)
}

func rowErr(r *Row, format string, args ...any) *RowError {
	return &RowError{EventID: r.EventID, Reason: fmt.Sprintf(format, args...)}
}

// Builder turns outbox rows into JetStream messages. Build is safe for
// concurrent use as long as the fields are not changed meanwhile; changing
// them between calls is fine. A Builder must not be copied after first use
// (it caches what it derives from its fields).
type Builder struct {
	Producer   string   // APP_NAME, the envelope's "producer"; "" = Subjects.App
	Subjects   Subjects // where rows without a subject override go
	MaxPayload int      // server max_payload in bytes (headers + body); 0 = no check
	// ObjectPayloadsOnly makes an array payload a *RowError (the relay's
	// PAYLOAD_ARRAYS=deadletter). The Ruby gem's consumer turns an array
	// payload into {}, so in a fleet with gem consumers an array would
	// reach them empty; refused here, it is dead-lettered with the reason.
	ObjectPayloadsOnly bool
	// Partitions is PARTITIONS: with N > 0, a row published to a
	// destination (not to a subject override) goes to
	// {subject}.{partition}, with the Bridge-Partition and
	// Bridge-Partitions headers; see partition.go. 0 keeps today's subjects.
	Partitions int

	cfg atomic.Pointer[builderConfig]
	lsn lsnCache
}

// lsnCache keeps the last commit LSN's text: the events of a transaction
// are built one after the other and share it, so it is formatted once per
// transaction.
type lsnCache struct {
	mu   sync.Mutex
	lsn  pglogrepl.LSN
	text string
}

func (c *lsnCache) format(lsn pglogrepl.LSN) string {
	c.mu.Lock()
	if c.text == "" || lsn != c.lsn {
		c.lsn, c.text = lsn, FormatLSN(lsn)
	}
	text := c.text
	c.mu.Unlock()
	return text
}

// FormatLSN is the wire form of an LSN, as Postgres and pglogrepl.LSN.String
// print it ("%X/%X" of the high and low 32 bits), in one allocation where
// the latter takes two and three times as long.
func FormatLSN(lsn pglogrepl.LSN) string {
	var buf [17]byte
	b := appendHexUpper(buf[:0], uint32(lsn>>32))
	b = append(b, '/')
	b = appendHexUpper(b, uint32(lsn))
	return string(b)
}

func appendHexUpper(b []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	shift := 28
	for shift > 0 && v>>shift == 0 {
		shift -= 4
	}
	for ; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>shift&0xf])
	}
	return b
}

// builderConfig caches what Build derives from the Builder's fields, so the
// default subject is not concatenated per event.
type builderConfig struct {
	subjects Subjects
	producer string // Builder.Producer as given, for cache invalidation
	prod     string // effective producer
	subject  string // default publish subject, "" when Subjects.Dest is empty
	dlq      string // DLQ subject, which no row may publish to
	err      error

	partitions  int      // Builder.Partitions as given, for cache invalidation
	partSubject []string // default subject of each partition
	partText    []string // each partition number as text
	partsText   string   // the partition count as text
}

func (b *Builder) config() *builderConfig {
	if c := b.cfg.Load(); c != nil && c.subjects == b.Subjects && c.producer == b.Producer && c.partitions == b.Partitions {
		return c
	}
	c := &builderConfig{subjects: b.Subjects, producer: b.Producer, prod: b.Producer, partitions: b.Partitions}
	if c.prod == "" {
		c.prod = b.Subjects.App
	}
	if err := b.Subjects.Validate(); err != nil {
		c.err = fmt.Errorf("envelope builder: %w", err)
	} else {
		c.dlq = b.Subjects.DLQ()
		if b.Subjects.Dest != "" {
			c.subject = b.Subjects.Publish("")
		}
	}
	if err := ValidatePartitions(b.Partitions); err != nil && c.err == nil {
		c.err = fmt.Errorf("envelope builder: %w", err)
	}
	if c.err == nil && b.Partitions > 0 {
		c.partsText = strconv.Itoa(b.Partitions)
		c.partText = make([]string, b.Partitions)
		c.partSubject = make([]string, b.Partitions)
		for p := range b.Partitions {
			c.partText[p] = strconv.Itoa(p)
			if c.subject != "" {
				c.partSubject[p] = PartitionSubject(c.subject, p)
			}
		}
		if s := PartitionSubject(c.subject, b.Partitions-1); c.subject != "" && len(s) > MaxSubjectLen {
			c.err = fmt.Errorf("envelope builder: partition subject %q is over the %d-byte limit", s, MaxSubjectLen)
		}
	}
	b.cfg.Store(c)
	return c
}

// Build turns one outbox row into a message. The body is a new buffer the
// caller owns (it stays in the publisher's in-flight window); the header map
// is new too.
//
// Envelope rules, following the Ruby gem's EventEnvelopeBuilder so that
// consumers on either side see the same thing:
//
//   - resource_type: the column; when empty, inferred from a dotted
//     event_type as the part before the first dot ("user.created" →
//     "user"; "billing.invoice.paid" → "billing", as the gem's
//     split('.').first does), else "event". event_type is left as written:
//     the gem does not shorten "user.created" to "created", so neither do we.
//   - resource_id: the column; when empty, payload.id, else
//     payload.resource_id (the gem's fallback order; null and false do not
//     count), a string as is and a number as its JSON text; else "".
//   - trace_id: the column verbatim; when empty, the trace-id field of a
//     W3C traceparent found in the row's headers; else "". The gem invents a
//     random one instead; we keep Build deterministic (a republished event
//     gets byte-identical content) and never invent tracing data.
//   - occurred_at: converted to RFC 3339 UTC, fraction kept.
//   - payload: copied verbatim; it must be a JSON object or array (only an
//     object with ObjectPayloadsOnly). With Row.PayloadJSONB and a
//     resource_id, Postgres's validation stands in for Build's own scan.
//
// Headers: Nats-Msg-Id (event id), Content-Type, Bridge-Commit-LSN and
// Bridge-Tx-Index (when pos has an LSN), every entry of the row's headers
// object, and traceparent from the trace_id column when it is a W3C
// traceparent and the row's headers do not already carry one.
//
// A row header is a member of the headers object: a string value as is, a
// number or boolean as its JSON text, null skipped. A nested object or array,
// a name that is not an HTTP token, a value with CR or LF, and any name that
// would override what the bridge owns (Nats-*, which also covers JetStream
// directives such as Nats-Rollup; Content-Type; Bridge-*; all matched
// case-insensitively) make the row a *RowError: it is dead-lettered with the
// reason rather than published without a header its writer counted on.
func (b *Builder) Build(r *Row, pos Position) (Message, error) {
	var m Message
	if err := b.BuildInto(&m, r, pos); err != nil {
		return Message{}, err
	}
	return m, nil
}

// BuildInto is Build writing into dst, whose body and header storage it
// reuses: a caller that publishes many messages can hand back those that are
// done with (acknowledged) instead of allocating new ones. The message dst
// held before is overwritten; after an error dst holds no message (keep it
// for reuse, do not publish it).
func (b *Builder) BuildInto(dst *Message, r *Row, pos Position) error {
	dst.Subject, dst.MsgID = "", ""
	cfg := b.config()
	if cfg.err != nil {
		return cfg.err
	}
	if err := checkPosition(pos); err != nil {
		return err
	}

	// Identity and type.
	if r.EventID == "" {
		return rowErr(r, "event_id is empty")
	}
	if !validID(r.EventID) {
		return rowErr(r, "event_id must be valid UTF-8 without control characters")
	}
	if r.EventType == "" {
		return rowErr(r, "event_type is empty")
	}

	// Subject: the row's override, else the row's destination, else the
	// configured destination.
	var subject string
	partitioned := cfg.partitions > 0 // an override subject is published as written
	switch {
	case r.Subject != "":
		partitioned = false
		if err := ValidatePublishSubject(r.Subject); err != nil {
			return rowErr(r, "subject override: %v", err)
		}
		if r.Subject == cfg.dlq {
			return rowErr(r, "subject override %q is the dead-letter subject", r.Subject)
		}
		subject = r.Subject
	case r.Destination != "":
		if err := validToken(r.Destination); err != nil {
			return rowErr(r, "destination %q: %v", r.Destination, err)
		}
		if r.Destination == dlqToken {
			return rowErr(r, "destination %q is the dead-letter subject", r.Destination)
		}
		if cfg.subjects.Dest == r.Destination {
			subject = cfg.subject
		} else {
			subject = cfg.subjects.Publish(r.Destination)
			if len(subject) > MaxSubjectLen {
				return rowErr(r, "destination %q makes a subject over %d bytes", r.Destination, MaxSubjectLen)
			}
		}
	case cfg.subject != "":
		subject = cfg.subject
	default:
		return rowErr(r, "no subject: the row has no subject or destination and DESTINATION_APP is not set")
	}

	// Payload: one pass validates it and finds the resource id fallback,
	// unless Postgres has validated it (jsonb) and the row has its resource
	// id.
	var payload, idVal []byte
	trusted := false
	if r.PayloadJSONB && r.ResourceID != "" {
		payload, trusted = trustedPayload(r.Payload)
	}
	if !trusted {
		var err error
		if payload, idVal, err = scanPayload(r.Payload); err != nil {
			return rowErr(r, "%v", err)
		}
	}
	if b.ObjectPayloadsOnly && payload[0] == '[' {
		return rowErr(r, "payload is a JSON array and PAYLOAD_ARRAYS=deadletter: consumers on the Ruby gem would receive it as {}")
	}

	// Row headers: one pass validates and measures them; a second fills
	// the map once its size is known.
	rh, err := scanRowHeaders(r.Headers)
	if err != nil {
		return rowErr(r, "headers: %v", err)
	}
	traceHeader := ""
	if !rh.hasTraceparent && isTraceparent(r.TraceID) {
		traceHeader = r.TraceID
	}

	if r.OccurredAt == "" {
		return rowErr(r, "occurred_at is empty")
	}

	resourceType := r.ResourceType
	if resourceType == "" {
		resourceType = inferResourceType(r.EventType)
	}

	// Partition: from the ordering key the sink's lanes use.
	part := -1
	if partitioned {
		key := rh.orderingKey
		if key == "" {
			rid := r.ResourceID
			switch {
			case rid != "":
			case len(idVal) > 0 && idVal[0] == '"':
				rid = unquote(idVal)
			case len(idVal) > 0:
				rid = string(idVal)
			}
			if rid != "" {
				key = PartitionKey(resourceType, rid)
			} else {
				key = r.EventID
			}
		}
		part = Partition(key, cfg.partitions)
		if subject == cfg.subject {
			subject = cfg.partSubject[part]
		} else {
			subject = PartitionSubject(subject, part)
			if len(subject) > MaxSubjectLen {
				return rowErr(r, "partition subject %q is over %d bytes", subject, MaxSubjectLen)
			}
		}
	}

	// The body, sized so that escaping-free rows need one allocation.
	size := 192 + len(r.EventID) + len(r.EventType) + len(cfg.prod) + len(resourceType) +
		len(r.ResourceID) + len(idVal) + len(r.TraceID) + len(payload)
	body := dst.Body[:0]
	if cap(body) < size {
		body = make([]byte, 0, size)
	}
	body = append(body, `{"event_id":`...)
	body = appendJSONString(body, r.EventID)
	body = append(body, `,"schema_version":1,"event_type":`...)
	body = appendJSONString(body, r.EventType)
	body = append(body, `,"producer":`...)
	body = appendJSONString(body, cfg.prod)
	body = append(body, `,"resource_type":`...)
	body = appendJSONString(body, resourceType)
	body = append(body, `,"resource_id":`...)
	switch {
	case r.ResourceID != "":
		body = appendJSONString(body, r.ResourceID)
	case len(idVal) > 0 && idVal[0] == '"':
		// A JSON string out of a valid JSON document is already a valid
		// JSON string; copying it keeps its exact spelling.
		body = append(body, idVal...)
	case len(idVal) > 0:
		body = append(body, '"')
		body = append(body, idVal...)
		body = append(body, '"')
	default:
		body = append(body, `""`...)
	}
	body = append(body, `,"occurred_at":"`...)
	body, err = appendTimestamp(body, r.OccurredAt)
	if err != nil {
		return rowErr(r, "occurred_at %q: %v", r.OccurredAt, err)
	}
	body = append(body, `","trace_id":`...)
	switch {
	case r.TraceID != "":
		body = appendJSONString(body, r.TraceID)
	case rh.traceID != "":
		body = append(body, '"')
		body = append(body, rh.traceID...)
		body = append(body, '"')
	default:
		body = append(body, `""`...)
	}
	body = append(body, `,"payload":`...)
	body = append(body, payload...)
	body = append(body, '}')

	// Headers.
	n := 2 + rh.n
	hdrSize := len(hdrLine) + len(crlf) +
		headerLen(HeaderMsgID, r.EventID) + headerLen(HeaderContentType, ContentTypeJSON) + rh.size
	var lsnText, txIndex string
	if pos.CommitLSN != 0 {
		n += 2
		lsnText, txIndex = b.lsn.format(pos.CommitLSN), strconv.Itoa(pos.TxIndex)
		hdrSize += headerLen(HeaderCommitLSN, lsnText) + headerLen(HeaderTxIndex, txIndex)
	}
	if traceHeader != "" {
		n++
		hdrSize += headerLen(HeaderTraceparent, traceHeader)
	}
	if part >= 0 {
		n += 2
		hdrSize += headerLen(HeaderPartition, cfg.partText[part]) + headerLen(HeaderPartitions, cfg.partsText)
	}
	if b.MaxPayload > 0 && len(body)+hdrSize > b.MaxPayload {
		return rowErr(r, "message is %d bytes (body %d + headers %d), over the server's max_payload of %d",
			len(body)+hdrSize, len(body), hdrSize, b.MaxPayload)
	}

	f := reuseHeaderFiller(dst, n)
	if rh.n > 0 {
		f.addRowHeaders(&rh)
	}
	f.set(HeaderMsgID, r.EventID)
	f.set(HeaderContentType, ContentTypeJSON)
	if pos.CommitLSN != 0 {
		f.set(HeaderCommitLSN, lsnText)
		f.set(HeaderTxIndex, txIndex)
	}
	if traceHeader != "" {
		f.set(HeaderTraceparent, traceHeader)
	}
	if part >= 0 {
		f.set(HeaderPartition, cfg.partText[part])
		f.set(HeaderPartitions, cfg.partsText)
	}

	dst.Subject, dst.Body, dst.Header, dst.MsgID, dst.vals = subject, body, f.h, r.EventID, f.vals
	return nil
}

// The NATS header block: "NATS/1.0\r\n", "Name: value\r\n" per value, "\r\n".
const (
	hdrLine = "NATS/1.0\r\n"
	crlf    = "\r\n"
)

func headerLen(name, value string) int { return len(name) + 2 + len(value) + 2 }

// inferResourceType mirrors the gem: event_type.split('.').first when the
// type has a dot, else "event". (Ruby gives "" for ".created"; we say
// "event" there too rather than publish an empty resource type.)
func inferResourceType(eventType string) string {
	for i := 0; i < len(eventType); i++ {
		if eventType[i] == '.' {
			if i == 0 {
				return "event"
			}
			return eventType[:i]
		}
	}
	return "event"
}

func checkPosition(pos Position) error {
	if pos.CommitLSN != 0 && pos.TxIndex < 0 {
		return fmt.Errorf("envelope builder: negative tx index %d", pos.TxIndex)
	}
	return nil
}

// trustedPayload returns the text output of a jsonb value without
// surrounding space when it is an object or array, as scanPayload would,
// but without scanning it: it is valid JSON by construction. The one rule
// of ours that jsonb may break is maxDepth, and nesting maxDepth levels
// takes 2*maxDepth bytes, so longer values are not vouched for. ok is false
// when scanPayload must decide (and give its error).
func trustedPayload(p []byte) (payload []byte, ok bool) {
	p = skipSpaceEnd(p[skipSpace(p, 0):])
	if len(p) == 0 || len(p) >= 2*maxDepth || (p[0] != '{' && p[0] != '[') {
		return nil, false
	}
	return p, true
}

// scanPayload validates the payload column and returns it without
// surrounding space, plus the raw JSON value of the resource id fallback
// (payload.id, else payload.resource_id; nil when neither fits).
func scanPayload(p []byte) (payload, idVal []byte, err error) {
	if p == nil {
		return nil, nil, errors.New("payload is NULL")
	}
	start, end := 0, len(p)
	for start < end && isSpace(p[start]) {
		start++
	}
	for end > start && isSpace(p[end-1]) {
		end--
	}
	p = p[start:end]
	if len(p) == 0 {
		return nil, nil, errors.New("payload is empty")
	}
	var rid []byte
	switch p[0] {
	case '{':
		// The envelope is depth 0, the payload object 1, its members 2.
		it := objectIter{data: p, pos: 1, depth: 2}
		for {
			k, v, more, ok := it.next()
			if !ok {
				return nil, nil, errors.New("payload is not valid JSON")
			}
			if !more {
				break
			}
			if keyIs(k, "id") {
				idVal = idCandidate(v)
			} else if keyIs(k, "resource_id") {
				rid = idCandidate(v)
			}
		}
		end = it.pos
	case '[':
		end = scanValue(p, 0, 1)
	default:
		return nil, nil, errors.New("payload must be a JSON object or array")
	}
	if end != len(p) {
		return nil, nil, errors.New("payload is not valid JSON")
	}
	if idVal == nil {
		idVal = rid
	}
	return p, idVal, nil
}

// idCandidate reports a value the gem's `payload['id'] || ...` would take:
// anything but null and false. Objects and arrays cannot be ids: they count
// as taken (the gem stops there too) but give "" .
func idCandidate(v []byte) []byte {
	switch v[0] {
	case 'n', 'f':
		return nil
	case '{', '[':
		return v[:0]
	}
	return v
}

// rowHeaders is what the first pass over the headers column found.
type rowHeaders struct {
	raw            []byte // the column, trailing space trimmed
	s              string // the same as one string; names and values slice it
	n              int    // entries that become headers
	size           int    // their wire size
	hasTraceparent bool   // a traceparent entry is among them
	traceID        string // its trace-id field, when it is a W3C traceparent
	orderingKey    string // the Ordering-Key entry's value, "" when none
}

// scanRowHeaders validates the headers column by the rules in Build's doc.
// Nested values are refused rather than flattened into a format no reader
// expects.
//
// The column is converted to one string, once, so that every plain name and
// value shares a single allocation.
func scanRowHeaders(raw []byte) (rowHeaders, error) {
	var rh rowHeaders
	raw = skipSpaceEnd(raw)
	i := skipSpace(raw, 0)
	if i == len(raw) {
		return rh, nil
	}
	switch raw[i] {
	case '{':
	case 'n':
		if scanLiteral(raw, i, "null") == len(raw) {
			return rh, nil
		}
		return rh, errors.New("not valid JSON")
	default:
		return rh, errors.New("must be a JSON object")
	}
	it := objectIter{data: raw, pos: i + 1, depth: 1}
	for {
		k, v, more, ok := it.next()
		if !ok {
			return rh, errors.New("not valid JSON")
		}
		if !more {
			break
		}
		if rh.s == "" {
			rh.raw, rh.s = raw, string(raw)
		}
		name := stringIn(rh.s, raw, k)
		if err := checkHeaderName(name); err != nil {
			return rh, err
		}
		value, ok := headerValueIn(rh.s, raw, v)
		if !ok {
			if v[0] == 'n' {
				continue
			}
			return rh, fmt.Errorf("%q: value must be a string, number or boolean", name)
		}
		if !headerValueOK(value) {
			return rh, fmt.Errorf("%q: value contains CR or LF", name)
		}
		if name == HeaderOrderingKey {
			rh.orderingKey = value
		}
		if name == HeaderTraceparent {
			rh.hasTraceparent = true
			rh.traceID = ""
			if isTraceparent(value) {
				rh.traceID = value[3:35]
			}
		}
		rh.n++
		rh.size += headerLen(name, value)
	}
	if it.pos != len(raw) {
		return rh, errors.New("not valid JSON")
	}
	return rh, nil
}

// headerFiller fills a header map whose size is known, giving every value
// slice a place in one backing array; each slice is capped so that a later
// Add cannot write into its neighbour.
type headerFiller struct {
	h    nats.Header
	vals []string
}

func newHeaderFiller(n int) headerFiller {
	return headerFiller{h: make(nats.Header, n), vals: make([]string, 0, n)}
}

// reuseHeaderFiller fills m's header map and value array again when there
// are any (emptied first), else new ones.
func reuseHeaderFiller(m *Message, n int) headerFiller {
	if m.Header == nil {
		return newHeaderFiller(n)
	}
	clear(m.Header)
	vals := m.vals[:0]
	if cap(vals) < n {
		vals = make([]string, 0, n)
	}
	return headerFiller{h: m.Header, vals: vals}
}

func (f *headerFiller) set(name, value string) {
	k := len(f.vals)
	f.vals = append(f.vals, value)
	f.h[name] = f.vals[k : k+1 : k+1]
}

// addRowHeaders is the second pass over a headers column that
// scanRowHeaders accepted.
func (f *headerFiller) addRowHeaders(rh *rowHeaders) {
	raw := rh.raw
	it := objectIter{data: raw, pos: skipSpace(raw, 0) + 1, depth: 1}
	for {
		k, v, more, _ := it.next()
		if !more {
			return
		}
		if value, ok := headerValueIn(rh.s, raw, v); ok {
			f.set(stringIn(rh.s, raw, k), value)
		}
	}
}

func skipSpaceEnd(b []byte) []byte {
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// stringIn decodes the raw JSON string v, a slice of raw; s is a string copy
// of raw. Plain strings are sliced out of s; escaped ones are decoded.
func stringIn(s string, raw, v []byte) string {
	if _, slow := scanString(v, 0); slow {
		return unquote(v)
	}
	off := offsetIn(raw, v)
	return s[off+1 : off+len(v)-1]
}

// headerValueIn returns a header value's text: strings decoded, numbers and
// booleans as written. ok is false for null, objects and arrays.
func headerValueIn(s string, raw, v []byte) (value string, ok bool) {
	switch v[0] {
	case '"':
		return stringIn(s, raw, v), true
	case '{', '[', 'n':
		return "", false
	}
	off := offsetIn(raw, v)
	return s[off : off+len(v)], true
}

// offsetIn returns where sub, a subslice of b, starts in b.
func offsetIn(b, sub []byte) int {
	return cap(b) - cap(sub)
}

func checkHeaderName(name string) error {
	if name == "" {
		return errors.New("empty header name")
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("%q: header names may only hold letters, digits and !#$%%&'*+-.^_`|~", name)
		}
	}
	switch {
	case hasPrefixFold(name, "Nats-"):
		return fmt.Errorf("%q: Nats-* headers are JetStream directives and are set by the relay only", name)
	case hasPrefixFold(name, "Bridge-"):
		return fmt.Errorf("%q: Bridge-* headers are set by the bridge only", name)
	case equalFold(name, HeaderContentType):
		return fmt.Errorf("%q: the envelope is always %s", name, ContentTypeJSON)
	}
	return nil
}

// isTokenChar reports an RFC 9110 token character.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && equalFold(s[:len(prefix)], prefix)
}

// equalFold is an ASCII-only strings.EqualFold (header names are ASCII).
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// validID reports an event id fit for the body and the Nats-Msg-Id header:
// valid UTF-8 without control characters. The column is a uuid, so this only
// ever refuses rows from a schema that strayed from ours.
func validID(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return false
		}
		i += size
	}
	return true
}

// headerValueOK reports a value that can travel in a NATS header line.
func headerValueOK(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return false
		}
	}
	return true
}

// isTraceparent reports a W3C trace-context version 00 traceparent:
// 00-<32 lowercase hex trace-id>-<16 lowercase hex parent-id>-<2 hex flags>,
// with neither id all zeros.
func isTraceparent[T string | []byte](s T) bool {
	if len(s) != 55 || s[0] != '0' || s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	return lowerHex(s[3:35]) && lowerHex(s[36:52]) && lowerHex(s[53:55]) &&
		!allZero(s[3:35]) && !allZero(s[36:52])
}

func lowerHex[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZero[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

// parseLSN parses a Postgres LSN, "16/B374D848": two hex numbers of at most
// 8 digits each.
func parseLSN(s string) (uint64, bool) {
	slash := -1
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			slash = i
			break
		}
	}
	if slash < 1 || slash > 8 || len(s)-slash-1 < 1 || len(s)-slash-1 > 8 {
		return 0, false
	}
	hi, ok1 := parseHex(s[:slash])
	lo, ok2 := parseHex(s[slash+1:])
	if !ok1 || !ok2 {
		return 0, false
	}
	return hi<<32 | lo, true
}

func parseHex(s string) (uint64, bool) {
	var n uint64
	for i := 0; i < len(s); i++ {
		v := hexVal(s[i])
		if v < 0 {
			return 0, false
		}
		n = n<<4 | uint64(v)
	}
	return n, true
}
