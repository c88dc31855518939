package envelope

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// Partitioned mode (PARTITIONS=N on relay and sink). Every event goes to one
// of N partitions, chosen from its ordering key, and the partition number is
// the last token of its subject, so that one consumer can filter exactly one
// partition:
//
//	[{env}.]{app}.sync.{dest}.{partition}
//
// The ordering key is the outbox row's Ordering-Key header entry when it has
// one, else resource_type + "\x00" + resource_id as they appear in the
// envelope (resource_type inferred from event_type, resource_id falling back
// to payload.id): the key the sink orders its lanes by. Events without a
// resource id and without an Ordering-Key have no order to keep; they hash
// their event id so that they spread over the partitions.
//
// The partition is the 32-bit FNV-1a hash of the key's UTF-8 bytes modulo N.
// Another language computes it as:
//
//	h := uint32(2166136261)
//	for each byte b of key { h ^= b; h *= 16777619 }  // mod 2^32
//	partition := h % N
//
// e.g. Partition("user\x0042", 16) is 12 (hash 0x8c920d3c); see the golden
// values in partition_test.go.
const (
	// HeaderPartition carries the event's partition number (decimal).
	HeaderPartition = "Bridge-Partition"
	// HeaderPartitions carries the relay's PARTITIONS, so that a sink
	// configured with a different count refuses the message instead of
	// consuming a subset of the keys in the wrong places.
	HeaderPartitions = "Bridge-Partitions"
	// HeaderOrderingKey is the outbox headers entry that overrides the
	// ordering key: events sharing it are kept in order, and go to one
	// partition, whatever their resource. It is published as a header, so
	// the sink orders its lanes by it too.
	HeaderOrderingKey = "Ordering-Key"
)

// MaxPartitions bounds PARTITIONS: every partition is a consumer on the
// stream and a row in the ownership table.
const MaxPartitions = 1024

// PartitionKey is the ordering key of an event without an Ordering-Key: its
// resource type and resource id as they appear in the envelope.
func PartitionKey(resourceType, resourceID string) string {
	return resourceType + "\x00" + resourceID
}

// Partition returns key's partition out of n (n >= 1): FNV-1a 32 modulo n.
func Partition(key string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// PartitionSubject is subject with the partition token appended.
func PartitionSubject(subject string, p int) string {
	return subject + "." + strconv.Itoa(p)
}

// PartitionFilter covers every partition of subject: subject.*.
func PartitionFilter(subject string) string { return subject + ".*" }

// ValidatePartitions checks a PARTITIONS value: 0 (off) to MaxPartitions.
func ValidatePartitions(n int) error {
	if n < 0 || n > MaxPartitions {
		return fmt.Errorf("PARTITIONS=%d: expected 0 (off) or a whole number up to %d", n, MaxPartitions)
	}
	return nil
}

// MessagePartitions reads Bridge-Partitions and Bridge-Partition from h.
// ok is false when the message carries no Bridge-Partitions header (it was
// not published in partitioned mode); err reports malformed values.
func MessagePartitions(h nats.Header) (partitions, partition int, ok bool, err error) {
	v := h.Get(HeaderPartitions)
	if v == "" {
		return 0, 0, false, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 {
		return 0, 0, true, fmt.Errorf("%s header %q is not a positive number", HeaderPartitions, v)
	}
	p, err := strconv.Atoi(strings.TrimSpace(h.Get(HeaderPartition)))
	if err != nil || p < 0 || p >= n {
		return n, 0, true, fmt.Errorf("%s header %q is not a partition of %d", HeaderPartition, h.Get(HeaderPartition), n)
	}
	return n, p, true, nil
}
