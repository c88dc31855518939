package envelope_test

import (
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// Golden values: another language's implementation must give the same.
func TestPartitionGolden(t *testing.T) {
	for _, tt := range []struct {
		key     string
		n, want int
	}{
		{"user\x0042", 16, 12},    // FNV-1a 32 = 0x8c920d3c
		{"user\x0042", 7, 5},      //
		{"", 16, 5},               // the offset basis 0x811c9dc5
		{"order\x00a1b2", 16, 7},  // 0xd9b9a887
		{"account\x00été", 16, 0}, // UTF-8 bytes: 0x36b17b50
		{"event\x007", 16, 14},    // 0xedaf9e0e
		{"anything", 1, 0},        // one partition
	} {
		if got := envelope.Partition(tt.key, tt.n); got != tt.want {
			t.Errorf("Partition(%q, %d)=%d, want %d", tt.key, tt.n, got, tt.want)
		}
	}
}

// The relay partitions by the key the sink's lanes use: the envelope's
// resource_type and resource_id as the sink parses them, inferred and
// fallback values included.
func TestBuildPartitionMatchesEnvelopeKey(t *testing.T) {
	for _, tt := range []struct {
		name, rtype, etype, column, payload string
	}{
		{"columns", "user", "created", "42", `{}`},
		{"inferred type", "", "user.created", "42", `{}`},
		{"string id fallback", "user", "created", "", `{"id":"01H1234567890ABCDEF"}`},
		{"numeric id fallback", "user", "created", "", `{"id":42}`},
		{"escaped id fallback", "user", "created", "", `{"id":"a\"b\u00e9"}`},
		{"resource_id fallback", "", "order.paid", "", `{"resource_id":9}`},
		{"no id: event id", "user", "created", "", `{"name":"Ada"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBuilder()
			b.Partitions = 16
			r := newRow()
			r.ResourceType, r.EventType, r.ResourceID, r.Payload = tt.rtype, tt.etype, tt.column, []byte(tt.payload)
			m := MustBuild(t, b, r, testPos)
			env, err := envelope.Parse(m.Body)
			if err != nil {
				t.Fatal(err)
			}
			key := envelope.PartitionKey(env.ResourceType, env.ResourceID)
			if env.ResourceID == "" {
				key = env.EventID
			}
			want := envelope.Partition(key, 16)
			if got, w := m.Subject, "shop.sync.billing."+strconv.Itoa(want); got != w {
				t.Fatalf("subject=%q, want %q", got, w)
			}
			n, p, ok, err := envelope.MessagePartitions(m.Header)
			if !ok || err != nil || n != 16 || p != want {
				t.Fatalf("headers say %d of %d (ok %v, err %v), want %d of 16", p, n, ok, err, want)
			}
		})
	}
}

func TestBuildPartitionOrderingKey(t *testing.T) {
	b := newBuilder()
	b.Partitions = 16
	r := newRow()
	r.Headers = []byte(`{"Ordering-Key":"account\u0000été"}`)
	m := MustBuild(t, b, r, testPos)
	if got, want := m.Subject, "shop.sync.billing.0"; got != want {
		t.Fatalf("subject=%q, want %q (the Ordering-Key's partition)", got, want)
	}
	if got := m.Header.Get(envelope.HeaderOrderingKey); got != "account\x00été" {
		t.Fatalf("Ordering-Key header=%q, want it published", got)
	}
}

func TestBuildPartitionSubjects(t *testing.T) {
	b := newBuilder()
	b.Partitions = 4
	r := newRow()
	r.Destination = "crm"
	if m := MustBuild(t, b, r, testPos); m.Subject != "shop.sync.crm."+m.Header.Get(envelope.HeaderPartition) {
		t.Fatalf("destination subject=%q, partition %q", m.Subject, m.Header.Get(envelope.HeaderPartition))
	}
	r.Destination, r.Subject = "", "custom.subject"
	m := MustBuild(t, b, r, testPos)
	if m.Subject != "custom.subject" || m.Header.Get(envelope.HeaderPartition) != "" || m.Header.Get(envelope.HeaderPartitions) != "" {
		t.Fatalf("override subject %q with headers %v: want it as written, without partition headers", m.Subject, m.Header)
	}
}

// PARTITIONS=0 publishes exactly what a build without the field does.
func TestBuildPartitionsOffUnchanged(t *testing.T) {
	off := MustBuild(t, newBuilder(), newRow(), testPos)
	b := newBuilder()
	b.Partitions = 0
	m := MustBuild(t, b, newRow(), testPos)
	if m.Subject != "shop.sync.billing" || string(m.Body) != string(off.Body) || len(m.Header) != len(off.Header) {
		t.Fatalf("PARTITIONS=0 changed the message: %q %v", m.Subject, m.Header)
	}
	if m.Header.Get(envelope.HeaderPartitions) != "" {
		t.Fatal("Bridge-Partitions without PARTITIONS")
	}
}

func TestMessagePartitions(t *testing.T) {
	for _, tt := range []struct {
		h          nats.Header
		n, p       int
		ok, hasErr bool
	}{
		{nats.Header{}, 0, 0, false, false},
		{nats.Header{"Bridge-Partitions": {"16"}, "Bridge-Partition": {"3"}}, 16, 3, true, false},
		{nats.Header{"Bridge-Partitions": {"x"}}, 0, 0, true, true},
		{nats.Header{"Bridge-Partitions": {"4"}, "Bridge-Partition": {"4"}}, 4, 0, true, true},
	} {
		n, p, ok, err := envelope.MessagePartitions(tt.h)
		if n != tt.n || p != tt.p || ok != tt.ok || (err != nil) != tt.hasErr {
			t.Errorf("%v: got %d %d %v %v", tt.h, n, p, ok, err)
		}
	}
}
